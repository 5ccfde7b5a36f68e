using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Models;
using LlmBuild.Core.Plan;

namespace LlmBuild.Core.Graph;

/// <summary>The <c>vit</c> piece of vision-language families and M-RoPE in the LLM blocks (DESIGN §13).</summary>
public static partial class PieceGraphBuilder
{
    public const string VisionRotaryCosKey = "visual.rotary.cos.weight";
    public const string VisionRotarySinKey = "visual.rotary.sin.weight";

    /// <summary>
    /// vit: patches [N, C·T·P·P] → patch embedding [N, E]; 2-D rotary tables gathered by position_ids [N, 2] (height,
    /// width) into [1, N, 1, head_dim]; each block norm → fused qkv → rotate-half RoPE → attention under the full mask
    /// (or, with window attention, the window mask except in full-attention blocks) → proj + residual → norm → MLP +
    /// residual; the merger's norm, merge² patches per row, Linear → GELU → Linear; with windows, the merged rows gathered
    /// back into raster order by reverse_index. N is fixed by MaxPixels; the host pads and masks what an image leaves over.
    /// </summary>
    private static PieceGraph Vit(Context c)
    {
        var g = c.G;
        VisionConfig v = c.Config.Vision ?? throw new LlmBuildException(ErrorCodes.GraphUnsupported, $"Piece {c.Piece.Name}: model_type '{c.Config.ModelType}' has no vision tower.");
        VisionTowerDeclaration tower = c.Model.ModelFamily.Vision!;
        long n = c.Model.VitPatches, e = v.EmbedDim, hd = v.HeadDim, heads = v.NumHeads, unit = v.MergeArea;
        if (n <= 0 || n % unit != 0)
            throw new LlmBuildException(ErrorCodes.GraphBadShape, $"Piece {c.Piece.Name}: {n} patches do not form whole merge windows of {unit}.");
        WeightEntry W(VisionRole role, int block = -1) => c.Owner!.Entries.FirstOrDefault(x => x.Vision == role && x.Layer == block)
            ?? throw new LlmBuildException(ErrorCodes.GraphMissingWeight, $"Piece {c.Piece.Name}: the vit owner has no {role}{(block >= 0 ? $" of vision block {block}" : "")}. Rebuild.");
        WeightEntry? B(VisionRole role, int block = -1) => tower.Has(role) ? W(role, block) : null;

        string patches = g.Input(NetContract.Vit.Patches, GraphDType.F32, n, v.PatchDim);
        string pos = g.Input(NetContract.Vit.PositionIds, GraphDType.SI32, n, 2);
        string fullMask = g.Input(NetContract.Vit.FullMask, GraphDType.F32, 1, 1, n, n);
        string? windowMask = v.UsesWindows ? g.Input(NetContract.Vit.WindowMask, GraphDType.F32, 1, 1, n, n) : null;
        string? reverse = v.UsesWindows ? g.Input(NetContract.Vit.ReverseIndex, GraphDType.SI32, n / unit) : null;

        string x = Linear(c, W(VisionRole.PatchEmbed), null, patches, null, [n, e], v.PatchDim, e);

        // 2-D rotary: row p of the table holds p·θ_j for the hd/4 frequencies; a patch gathers its height row then its
        // width row, which side by side are the first half of the head (repeated for the second, rotate-half).
        long quarter = hd / 4, rows = Math.Max(n, 1);
        var cosTable = new float[rows * quarter];
        var sinTable = new float[rows * quarter];
        for (long p = 0; p < rows; p++)
            for (long j = 0; j < quarter; j++)
            {
                float inv = 1f / MathF.Pow(10000f, 2f * j / (hd / 2));
                float angle = p * inv;
                cosTable[p * quarter + j] = MathF.Cos(angle);
                sinTable[p * quarter + j] = MathF.Sin(angle);
            }
        string Table(string key, float[] data, string name)
        {
            string table = g.Constant(key, GraphDType.F32, [rows, quarter], data);
            string gathered = g.Op("top.Gather", [table, pos], name, [n, 2, quarter], OpAttr.SI32("axis", 0));
            string half = g.Op("top.Reshape", [gathered], name + ".reshape", [1, n, 1, hd / 2], OpAttr.I64s("shape", 1, n, 1, hd / 2));
            return g.Op("top.Concat", [half, half], name + ".tile", [1, n, 1, hd], OpAttr.SI32("axis", 3));
        }
        string cos = Table(VisionRotaryCosKey, cosTable, "visual.rotary.cos");
        string sin = Table(VisionRotarySinKey, sinTable, "visual.rotary.sin");

        for (int block = 0; block < v.Depth; block++)
        {
            string prefix = $"visual.blocks.{block}.";
            string ln1 = VisionNormOp(c, tower, x, W(VisionRole.Norm1, block), B(VisionRole.Norm1Bias, block), [n, e]);
            string qkv = Linear(c, W(VisionRole.Qkv, block), W(VisionRole.QkvBias, block), ln1, null, [n, 3 * e], e, 3 * e);
            string split = g.Op("top.Reshape", [qkv], prefix + "attn.qkv.reshape", [n, 3, e], OpAttr.I64s("shape", n, 3, e));
            string Part(int which, string name)
            {
                string part = g.Op("top.Slice", [split, "", "", ""], prefix + $"attn.{name}", [n, 1, e],
                    OpAttr.I64s("offset", 0, which, 0), OpAttr.I64s("steps", 1, 1, 1), OpAttr.I64s("ends", n, which + 1, e), OpAttr.I64s("axes"));
                return g.Op("top.Reshape", [part], prefix + $"attn.{name}.reshape", [1, n, heads, hd], OpAttr.I64s("shape", 1, n, heads, hd));
            }
            string q = RotateHalf(g, Part(0, "q"), cos, sin, prefix + "attn.q.rotary");
            string k = RotateHalf(g, Part(1, "k"), cos, sin, prefix + "attn.k.rotary");
            string val = Part(2, "v");
            string mask = v.IsFullAttention(block) ? fullMask : windowMask!;
            string attn = g.Op("top.FAttention", [q, k, val, mask, ""], prefix + "fattention", [1, n, e],
                OpAttr.F64("scale", 1.0 / Math.Sqrt(hd)), OpAttr.I64("batch", 1), OpAttr.I64("q_head", heads), OpAttr.I64("kv_head", heads),
                OpAttr.I64("dim", hd), OpAttr.I64("mq", n), OpAttr.I64("mk", n));
            attn = g.Op("top.Reshape", [attn], prefix + "fattention.reshape", [n, e], OpAttr.I64s("shape", n, e));
            string proj = Linear(c, W(VisionRole.Proj, block), B(VisionRole.ProjBias, block), attn, null, [n, e], e, e);
            x = g.Op("top.Add", [x, proj], prefix + "attn.proj.add", [n, e]);

            string ln2 = VisionNormOp(c, tower, x, W(VisionRole.Norm2, block), B(VisionRole.Norm2Bias, block), [n, e]);
            long inter = v.IntermediateSize;
            string mlp;
            if (tower.GatedMlp)
            {
                string gate = Linear(c, W(VisionRole.Gate, block), B(VisionRole.GateBias, block), ln2, null, [n, inter], e, inter);
                string up = Linear(c, W(VisionRole.Up, block), B(VisionRole.UpBias, block), ln2, null, [n, inter], e, inter);
                string act = VisionActivation(g, v.HiddenAct, gate, prefix + "mlp.act", [n, inter]);
                string mul = g.Op("top.Mul", [act, up], prefix + "mlp.mul", [n, inter]);
                mlp = Linear(c, W(VisionRole.Down, block), B(VisionRole.DownBias, block), mul, null, [n, e], inter, e);
            }
            else
            {
                string fc1 = Linear(c, W(VisionRole.Fc1, block), B(VisionRole.Fc1Bias, block), ln2, null, [n, inter], e, inter);
                string act = VisionActivation(g, v.HiddenAct, fc1, prefix + "mlp.act", [n, inter]);
                mlp = Linear(c, W(VisionRole.Fc2, block), B(VisionRole.Fc2Bias, block), act, null, [n, e], inter, e);
            }
            x = g.Op("top.Add", [x, mlp], prefix + "mlp.add", [n, e]);
        }

        long tokens = n / unit, width = e * unit, outH = v.OutHiddenSize;
        string lnq = VisionNormOp(c, tower, x, W(VisionRole.MergerNorm), B(VisionRole.MergerNormBias), [n, e]);
        string rowsOfWindows = g.Op("top.Reshape", [lnq], "visual.merger.ln_q.reshape", [tokens, width], OpAttr.I64s("shape", tokens, width));
        string h0 = Linear(c, W(VisionRole.Merger0), B(VisionRole.Merger0Bias), rowsOfWindows, null, [tokens, width], width, width);
        string gelu = g.Op("top.GELU", [h0], "visual.merger.mlp.1", [tokens, width], OpAttr.String("approx_mode", "normal"));
        string output = Linear(c, W(VisionRole.Merger2), B(VisionRole.Merger2Bias), gelu, reverse is null ? NetContract.Vit.Output : null, [tokens, outH], width, outH);
        if (reverse is not null)
            output = g.Op("top.Gather", [output, reverse], NetContract.Vit.Output, [tokens, outH], OpAttr.SI32("axis", 0));
        return g.Build(c.Platform, false, output);
    }

    private static string VisionNormOp(Context c, VisionTowerDeclaration tower, string x, WeightEntry weight, WeightEntry? bias, long[] shape)
    {
        long width = shape[^1];
        string gamma = c.Plain(weight, width);
        string name = Stem(weight.Key);
        if (tower.Norm == VisionNorm.RmsNorm)
            return c.G.Op("top.RMSNorm", [x, gamma], name, shape, OpAttr.F64("eps", tower.NormEps));
        return c.G.Op("top.LayerNorm", [x, gamma, bias is null ? "" : c.Plain(bias, width)], name, shape,
            OpAttr.I64s("normalized_shape", width), OpAttr.SI32("axis", shape.Length - 1), OpAttr.F64("eps", tower.NormEps));
    }

    /// <summary>quick_gelu x·σ(1.702x) as silu(1.702x)/1.702 (exactly that), silu, or tanh-approximated gelu.</summary>
    private static string VisionActivation(GraphAssembler g, string act, string x, string name, long[] shape)
    {
        switch (act)
        {
            case "quick_gelu":
                string scaled = g.Op("top.MulConst", [x], name + ".in", shape, OpAttr.F64("const_val", 1.702));
                string silu = g.Op("top.SiLU", [scaled], name + ".silu", shape);
                return g.Op("top.MulConst", [silu], name, shape, OpAttr.F64("const_val", 1.0 / 1.702));
            case "silu":
                return g.Op("top.SiLU", [x], name, shape);
            case "gelu_pytorch_tanh":
                return g.Op("top.GELU", [x], name, shape, OpAttr.String("approx_mode", "tanh"));
            default:
                throw new LlmBuildException(ErrorCodes.GraphUnsupported, $"vision hidden_act '{act}' is not supported (quick_gelu, silu, gelu_pytorch_tanh).");
        }
    }

    /// <summary>
    /// M-RoPE cos or sin [1, L, 1, d]: the table rows gathered by each of the 3 position rows ([3, L] → [3, L, 1, d]),
    /// the first half's frequencies taken section by section from the temporal, height and width rows, repeated for the
    /// second half (rotate-half layout).
    /// </summary>
    private static string MropeTable(Context c, string table, string pos, int len, long d, string name)
    {
        var g = c.G;
        var sections = c.Config.MropeSection!;
        string gathered = g.Op("top.Gather", [table, pos], name + ".gather", [3, len, 1, d], OpAttr.SI32("axis", 0));
        var parts = new string[3];
        long start = 0;
        for (int s = 0; s < 3; s++)
        {
            long count = sections[s];
            parts[s] = g.Op("top.Slice", [gathered, "", "", ""], $"{name}.slice{s}", [1, len, 1, count],
                OpAttr.I64s("offset", s, 0, 0, start), OpAttr.I64s("steps", 1, 1, 1, 1), OpAttr.I64s("ends", s + 1, len, 1, start + count), OpAttr.I64s("axes"));
            start += count;
        }
        string half = g.Op("top.Concat", parts, name + ".concat", [1, len, 1, d / 2], OpAttr.SI32("axis", 3));
        return g.Op("top.Concat", [half, half], name, [1, len, 1, d], OpAttr.SI32("axis", 3));
    }
}
