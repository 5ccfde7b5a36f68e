using System.Text.Json.Nodes;
using LlmBuild.Core.Graph;

namespace LlmBuild.Core.Tests.Mlir;

/// <summary>
/// TPU-MLIR's top dialect as described by tests/fixtures/top_ops.json (generated from TopOps.td), plus the LLM ops the
/// fixture's revision predates (<see cref="Supplement"/>, taken from TPU-MLIR's FAttention/A16MatMul op definitions).
/// Checks a graph op against its definition: the op exists, operands fit (tensor vs. None, Optional, Variadic), every
/// attribute is declared with the same type, and every required attribute is present.
/// </summary>
internal sealed class TopDialect
{
    /// <summary>
    /// Ops newer than top_ops.json's TopOps.td revision, in the same format. Remove an entry once the fixture is
    /// regenerated from a revision that has it (a test fails while both have it).
    /// </summary>
    public const string Supplement = """
    {
      "top.A16MatMul": {
        "operands": [
          {"name": "input", "kind": "tensor", "variadic": false, "optional": false},
          {"name": "weight", "kind": "tensor", "variadic": false, "optional": false},
          {"name": "scale", "kind": "tensor", "variadic": false, "optional": false},
          {"name": "zp", "kind": "tensor", "variadic": false, "optional": false},
          {"name": "bias", "kind": "tensor_or_none", "variadic": false, "optional": false}
        ],
        "attributes": {
          "right_transpose": {"kind": "bool", "required": false},
          "q_group_size": {"kind": "i64", "required": false},
          "weight_bits": {"kind": "i64", "required": false},
          "do_relu": {"kind": "bool", "required": false},
          "relu_limit": {"kind": "f64", "required": false}
        },
        "results": [{"name": "output", "kind": "tensor"}]
      },
      "top.FAttention": {
        "operands": [
          {"name": "queries", "kind": "tensor", "variadic": false, "optional": false},
          {"name": "keys", "kind": "tensor", "variadic": false, "optional": false},
          {"name": "values", "kind": "tensor", "variadic": false, "optional": false},
          {"name": "mask", "kind": "tensor_or_none", "variadic": false, "optional": false},
          {"name": "buffer", "kind": "tensor_or_none", "variadic": false, "optional": false}
        ],
        "attributes": {
          "scale": {"kind": "f64", "required": true},
          "batch": {"kind": "i64", "required": true},
          "q_head": {"kind": "i64", "required": true},
          "kv_head": {"kind": "i64", "required": true},
          "dim": {"kind": "i64", "required": true},
          "mq": {"kind": "i64", "required": true},
          "mk": {"kind": "i64", "required": true},
          "keep_dims": {"kind": "bool", "required": false},
          "mask_size": {"kind": "i64", "required": false}
        },
        "results": [{"name": "output", "kind": "tensor"}]
      }
    }
    """;

    private readonly JsonObject _fixtureOps;
    private readonly JsonObject _supplementOps;

    public TopDialect()
    {
        var root = (JsonObject)JsonNode.Parse(File.ReadAllText(Graph.TestResolver.Fixture("top_ops.json")))!;
        _fixtureOps = (JsonObject)root["ops"]!;
        _supplementOps = (JsonObject)JsonNode.Parse(Supplement)!;
    }

    public IEnumerable<string> SupplementOps => _supplementOps.Select(p => p.Key);

    public bool FixtureHas(string op) => _fixtureOps.ContainsKey(op);

    public bool Has(string op) => _fixtureOps.ContainsKey(op) || _supplementOps.ContainsKey(op);

    /// <summary>Every problem with <paramref name="op"/> (empty when it is a valid top-dialect op).</summary>
    public List<string> Check(GraphOp op, PieceGraph graph)
    {
        var problems = new List<string>();
        string where = $"{graph.Name}: {op.Kind} ({op.Outputs[0]})";
        var def = (_fixtureOps[op.Kind] ?? _supplementOps[op.Kind]) as JsonObject;
        if (def is null) { problems.Add($"{where}: no such op in the top dialect"); return problems; }

        var operands = ((JsonArray)def["operands"]!).Select(o => (JsonObject)o!).ToList();
        int required = operands.Count(o => !(bool)o["variadic"]! && !(bool)o["optional"]!);
        int i = 0;
        for (int d = 0; d < operands.Count; d++)
        {
            var o = operands[d];
            string kind = (string)o["kind"]!;
            if ((bool)o["variadic"]!)
            {
                int rest = operands.Skip(d + 1).Count(x => !(bool)x["optional"]!);
                int take = op.Inputs.Count - i - rest;
                if (take < 1) problems.Add($"{where}: variadic operand '{o["name"]}' gets {take} values");
                for (int t = 0; t < take; t++, i++)
                    if (op.Inputs[i].Length == 0) problems.Add($"{where}: variadic operand '{o["name"]}' is None");
                continue;
            }
            if ((bool)o["optional"]!)
            {
                int remainingRequired = operands.Skip(d + 1).Count(x => !(bool)x["optional"]!);
                if (op.Inputs.Count - i > remainingRequired)
                {
                    if (op.Inputs[i].Length == 0) problems.Add($"{where}: Optional operand '{o["name"]}' is given as None; leave it out");
                    i++;
                }
                continue;
            }
            if (i >= op.Inputs.Count) { problems.Add($"{where}: operand '{o["name"]}' is missing"); continue; }
            if (op.Inputs[i].Length == 0 && kind != "tensor_or_none") problems.Add($"{where}: operand '{o["name"]}' may not be None");
            i++;
        }
        if (i != op.Inputs.Count) problems.Add($"{where}: {op.Inputs.Count} operands but the op takes {i} ({required} required)");

        int results = ((JsonArray)def["results"]!).Count;
        if (results != op.Outputs.Count) problems.Add($"{where}: {op.Outputs.Count} results, the op has {results}");

        var attrs = (JsonObject)def["attributes"]!;
        foreach (OpAttr a in op.Attributes)
        {
            if (attrs[a.Name] is not JsonObject ad) { problems.Add($"{where}: unknown attribute '{a.Name}'"); continue; }
            string expected = (string)ad["kind"]!;
            string actual = a.Kind switch
            {
                AttrKind.Bool => "bool",
                AttrKind.I64 => "i64",
                AttrKind.I32 => "i32",
                AttrKind.SI32 => "si32",
                AttrKind.F64 => "f64",
                AttrKind.Str => expected is "str" or "str_enum" ? expected : "str",
                AttrKind.I64Array => "array<i64>",
                AttrKind.F64Array => "array<f64>",
                _ => "?",
            };
            if (actual != expected) problems.Add($"{where}: attribute '{a.Name}' is {actual}, TopOps.td declares {expected}");
        }
        foreach (var (name, node) in attrs)
            if ((bool)node!["required"]! && op.Find(name) is null) problems.Add($"{where}: required attribute '{name}' is missing");
        return problems;
    }
}
