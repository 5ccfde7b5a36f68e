using System.Globalization;
using System.Text;
using LlmBuild.Core.Graph;
using LlmBuild.Core.Models;
using LlmBuild.Core.Plan;

namespace LlmBuild.Core.Mlir;

/// <summary>
/// Prints a <see cref="PieceGraph"/> as a TPU-MLIR top-dialect module, the way TPU-MLIR's importer prints one:
/// a builtin module with the module.* attributes model_deploy.py reads, one <c>func.func @main</c>, top ops in MLIR's
/// generic form, each result located by its tensor name (<c>top.Weight</c> locations are npz keys). The text depends
/// only on the graph, so the same graph always gives byte-identical output.
/// </summary>
public static class MlirWriter
{
    public static string Write(PieceGraph graph, string weightFileName)
    {
        // The MLIR is always the whole piece (TPU-MLIR splits it itself with --num_device); a shard's sliced weights
        // have no top.Weight form.
        if (graph.Shard is not null)
            throw new InvalidOperationException($"{graph.Name} is a tensor-parallel shard of {graph.Piece.Name}; export the whole piece.");
        var sb = new StringBuilder();
        var ids = new Dictionary<string, string>(StringComparer.Ordinal);
        int next = 0;

        string runMode = graph.Dynamic ? "DYNAMIC" : "STATIC";
        sb.Append("module @").Append(Quote(graph.Name)).Append(" attributes {")
          .Append("module.chip = \"ALL\", ")
          .Append("module.platform = ").Append(Quote(graph.Platform)).Append(", ")
          .Append("module.state = \"TOP_F32\", ")
          .Append("module.top_run_mode = ").Append(Quote(runMode)).Append(", ")
          .Append("module.weight_file = ").Append(Quote(weightFileName))
          .Append("} {\n");

        sb.Append("  func.func @main(");
        for (int i = 0; i < graph.Inputs.Count; i++)
        {
            if (i > 0) sb.Append(", ");
            sb.Append("%arg").Append(i).Append(": ").Append(Type(graph.Tensor(graph.Inputs[i]))).Append(" loc(unknown)");
        }
        sb.Append(") -> ");
        AppendTypeList(sb, graph.Outputs.Select(o => Type(graph.Tensor(o))).ToList(), parenthesizeSingle: false);
        sb.Append(" {\n");

        string none = "%" + next++.ToString(CultureInfo.InvariantCulture);
        sb.Append("    ").Append(none).Append(" = \"top.None\"() : () -> none loc(unknown)\n");

        for (int i = 0; i < graph.Inputs.Count; i++)
        {
            GraphTensor t = graph.Tensor(graph.Inputs[i]);
            string id = "%" + next++.ToString(CultureInfo.InvariantCulture);
            ids[t.Name] = id;
            sb.Append("    ").Append(id).Append(" = \"top.Input\"(%arg").Append(i).Append(") : (").Append(Type(t)).Append(") -> ")
              .Append(Type(t)).Append(" loc(").Append(Quote(t.Name)).Append(")\n");
        }
        foreach (string key in graph.WeightFileKeys)
        {
            GraphTensor t = graph.Tensor(key);
            string id = "%" + next++.ToString(CultureInfo.InvariantCulture);
            ids[key] = id;
            sb.Append("    ").Append(id).Append(" = \"top.Weight\"() : () -> ").Append(Type(t)).Append(" loc(").Append(Quote(key)).Append(")\n");
        }

        foreach (GraphOp op in graph.Ops)
        {
            string id = "%" + next++.ToString(CultureInfo.InvariantCulture);
            if (op.Outputs.Count == 1) ids[op.Outputs[0]] = id;
            else for (int r = 0; r < op.Outputs.Count; r++) ids[op.Outputs[r]] = id + "#" + r.ToString(CultureInfo.InvariantCulture);

            sb.Append("    ").Append(id);
            if (op.Outputs.Count > 1) sb.Append(':').Append(op.Outputs.Count);
            sb.Append(" = ").Append(Quote(op.Kind)).Append('(');
            sb.AppendJoin(", ", op.Inputs.Select(n => n.Length == 0 ? none : ids[n]));
            sb.Append(')');
            if (op.Attributes.Count > 0)
            {
                sb.Append(" {");
                sb.AppendJoin(", ", op.Attributes.Select(a => a.Name + " = " + Value(a)));
                sb.Append('}');
            }
            sb.Append(" : (");
            sb.AppendJoin(", ", op.Inputs.Select(n => n.Length == 0 ? "none" : Type(graph.Tensor(n))));
            sb.Append(") -> ");
            AppendTypeList(sb, op.Outputs.Select(o => Type(graph.Tensor(o))).ToList(), parenthesizeSingle: false);
            sb.Append(" loc(");
            if (op.Outputs.Count == 1) sb.Append(Quote(op.Outputs[0]));
            else sb.Append("fused[").AppendJoin(", ", op.Outputs.Select(Quote)).Append(']');
            sb.Append(")\n");
        }

        sb.Append("    return ").AppendJoin(", ", graph.Outputs.Select(o => ids[o]))
          .Append(" : ").AppendJoin(", ", graph.Outputs.Select(o => Type(graph.Tensor(o)))).Append(" loc(unknown)\n");
        sb.Append("  } loc(unknown)\n");
        sb.Append("} loc(unknown)\n");
        return sb.ToString();
    }

    /// <summary>The MLIR tensor type, e.g. <c>tensor&lt;1x512x896xbf16&gt;</c>.</summary>
    public static string Type(GraphTensor t) =>
        "tensor<" + string.Concat(t.Shape.Select(s => s.ToString(CultureInfo.InvariantCulture) + "x")) + t.DType.MlirName() + ">";

    private static void AppendTypeList(StringBuilder sb, List<string> types, bool parenthesizeSingle)
    {
        if (types.Count == 1 && !parenthesizeSingle) { sb.Append(types[0]); return; }
        sb.Append('(').AppendJoin(", ", types).Append(')');
    }

    private static string Value(OpAttr a) => a.Kind switch
    {
        AttrKind.Bool => a.Bool ? "true" : "false",
        AttrKind.I64 => a.Int.ToString(CultureInfo.InvariantCulture) + " : i64",
        AttrKind.I32 => a.Int.ToString(CultureInfo.InvariantCulture) + " : i32",
        AttrKind.SI32 => a.Int.ToString(CultureInfo.InvariantCulture) + " : si32",
        AttrKind.F64 => Float(a.Float) + " : f64",
        AttrKind.Str => Quote(a.Str!),
        AttrKind.I64Array => "[" + string.Join(", ", a.Ints!.Select(i => i.ToString(CultureInfo.InvariantCulture) + " : i64")) + "]",
        AttrKind.F64Array => "[" + string.Join(", ", a.Floats!.Select(f => Float(f) + " : f64")) + "]",
        _ => throw new ArgumentOutOfRangeException(nameof(a)),
    };

    /// <summary>A decimal MLIR float literal that round-trips (MLIR requires a '.' or an exponent).</summary>
    private static string Float(double value)
    {
        if (!double.IsFinite(value)) throw new ArgumentException($"Attribute value {value} is not finite.", nameof(value));
        string s = value.ToString("R", CultureInfo.InvariantCulture);
        int e = s.IndexOf('E');
        string mantissa = e < 0 ? s : s[..e], exponent = e < 0 ? "" : "e" + s[(e + 1)..];
        if (!mantissa.Contains('.')) mantissa += ".0";
        return mantissa + exponent;
    }

    private static string Quote(string s)
    {
        var sb = new StringBuilder(s.Length + 2).Append('"');
        foreach (byte b in Encoding.UTF8.GetBytes(s))
        {
            if (b is (byte)'"' or (byte)'\\') sb.Append('\\').Append((char)b);
            else if (b < 0x20 || b > 0x7e) sb.Append('\\').Append(b.ToString("X2", CultureInfo.InvariantCulture));
            else sb.Append((char)b);
        }
        return sb.Append('"').ToString();
    }
}
