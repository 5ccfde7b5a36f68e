using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Models;
using LlmBuild.Core.Plan;

namespace LlmBuild.Core.Graph;

/// <summary>
/// The mixture-of-experts MLP of a sparse layer (qwen2_moe, qwen3_moe), written with ops the top dialect, the
/// interpreter and the emulator already have rather than TPU-MLIR's MoERouter/MoEDispatch/MoECombine: their token
/// dispatch semantics are not part of the op definitions, while this form is exact and compiles anywhere.
/// The router's softmax over every expert and its top-k become a dense [tokens, experts] weight matrix (zero except at
/// each token's chosen experts; ScatterElements puts the top-k weights at their expert indices, so ties resolve exactly
/// as TopK does); then every expert's SwiGLU runs on every token and is scaled by its column of that matrix. The result
/// equals Hugging Face's sparse dispatch (an unchosen expert's output is multiplied by exactly 0) at num_experts /
/// num_experts_per_tok times the MLP compute.
/// </summary>
public static partial class PieceGraphBuilder
{
    /// <summary>The name prefix of a layer's MLP sums: the dense down_proj's stem, or a sparse layer's MLP module.</summary>
    private static string MlpOutputStem(Context c, int layer) =>
        c.Config.IsSparseLayer(layer) ? MoeModule(c, layer) : Stem(c.Need(WeightRole.MlpDown, layer).Key);

    /// <summary>The MLP module a sparse layer's router belongs to ("model.layers.3.mlp" for "model.layers.3.mlp.gate.weight").</summary>
    private static string MoeModule(Context c, int layer)
    {
        string router = Stem(c.Need(WeightRole.MoeRouter, layer).Key);
        int dot = router.LastIndexOf('.');
        return dot < 0 ? router : router[..dot];
    }

    /// <summary>The weight entry of one routed expert's linear.</summary>
    private static WeightEntry NeedExpert(Context c, WeightRole role, int layer, int expert) =>
        c.Owner?.Entries.FirstOrDefault(e => e.Role == role && e.Layer == layer && e.Expert == expert)
        ?? throw new LlmBuildException(ErrorCodes.GraphMissingWeight,
            $"Piece {c.Piece.Name}: weight owner '{c.Piece.WeightOwner ?? "(none)"}' has no {role} of expert {expert} of layer {layer}. " +
            "The resolved model is stale or inconsistent; rebuild.");

    /// <summary>Post-attention norm, router, top-k routing weights, every expert scaled by its weight, the shared expert.</summary>
    private static string MoeMlp(Context c, BlockDims b, Part part, string res, string? name)
    {
        if (!part.IsWhole)
            throw new LlmBuildException(ErrorCodes.MoeTensorParallel, $"Piece {c.Piece.Name}: a mixture-of-experts layer cannot be split across devices.");
        var g = c.G;
        MoeConfig moe = c.Config.Moe!;
        int layer = b.Layer, batch = b.Batch, len = b.Len;
        long h = b.Hidden, experts = moe.NumExperts, topK = moe.ExpertsPerToken, tokens = (long)batch * len;
        long[] states = [batch, len, h];
        string module = MoeModule(c, layer);

        WeightEntry postNorm = c.Need(WeightRole.PostAttentionNorm, layer);
        string x = g.Op("top.RMSNorm", [res, c.Plain(postNorm, h)], Stem(postNorm.Key), states, OpAttr.F64("eps", c.Config.RmsNormEps));

        // Router probabilities over every expert, one row per token, then each token's top k.
        WeightEntry router = c.Need(WeightRole.MoeRouter, layer);
        string logits = Linear(c, router, null, x, null, [batch, len, experts], h, experts);
        string rows = g.Op("top.Reshape", [logits], module + ".router_logits", [tokens, experts], OpAttr.I64s("shape", tokens, experts));
        string probs = g.Op("top.Softmax", [rows], module + ".router_probs", [tokens, experts], OpAttr.SI32("axis", 1));
        string[] top = g.Op("top.TopK", [probs],
            [(module + ".topk_weights", GraphDType.F32, [tokens, topK]), (module + ".topk_experts", GraphDType.F32, [tokens, topK])],
            OpAttr.I64("axis", 1), OpAttr.I64("K", topK));
        string weights = top[0];
        if (moe.NormalizeTopK)
        {
            // norm_topk_prob: the chosen weights divided by their sum (a matmul with a column of ones sums each row).
            string ones = g.Constant(module + ".topk_ones.weight", GraphDType.F32, [topK, 1], Enumerable.Repeat(1f, (int)topK).ToArray());
            string total = g.Op("top.MatMul", [weights, ones, ""], module + ".topk_sum", [tokens, 1], OpAttr.Of("do_relu", false));
            weights = g.Op("top.Div", [weights, total], module + ".topk_normalized", [tokens, topK]);
        }
        // The zeros the chosen weights are scattered into: 0 · probabilities (finite softmax outputs), so no constant as
        // large as the prefill is stored with the piece.
        string zeros = g.Op("top.MulConst", [probs], module + ".routing_zeros", [tokens, experts], OpAttr.F64("const_val", 0));
        string routing = g.Op("top.ScatterElements", [zeros, top[1], weights], module + ".routing_weights", [tokens, experts], OpAttr.I64("axis", 1));
        string routingStates = g.Op("top.Reshape", [routing], module + ".routing_weights.reshape", [batch, len, experts],
            OpAttr.I64s("shape", batch, len, experts));

        string? sum = null;
        for (int e = 0; e < experts; e++)
        {
            string column = g.Op("top.Slice", [routingStates, "", "", ""], $"{module}.experts.{e}.routing_weight", [batch, len, 1],
                OpAttr.I64s("offset", 0, 0, e), OpAttr.I64s("steps", 1, 1, 1), OpAttr.I64s("ends", batch, len, e + 1), OpAttr.I64s("axes"));
            WeightEntry gateW = NeedExpert(c, WeightRole.ExpertGate, layer, e), upW = NeedExpert(c, WeightRole.ExpertUp, layer, e);
            WeightEntry downW = NeedExpert(c, WeightRole.ExpertDown, layer, e);
            string expert = SwiGlu(c, x, gateW, upW, downW, batch, len, h, moe.ExpertIntermediateSize);
            string weighted = g.Op("top.Mul", [expert, column], Stem(downW.Key) + ".weighted", states);
            sum = sum is null ? weighted : g.Op("top.Add", [sum, weighted], $"{module}.experts.sum{e}", states);
        }

        if (moe.HasSharedExpert)
        {
            WeightEntry gateW = c.Need(WeightRole.SharedExpertGate, layer), upW = c.Need(WeightRole.SharedExpertUp, layer);
            WeightEntry downW = c.Need(WeightRole.SharedExpertDown, layer), scoreW = c.Need(WeightRole.SharedExpertSigmoidGate, layer);
            string shared = SwiGlu(c, x, gateW, upW, downW, batch, len, h, moe.SharedExpertIntermediateSize);
            string score = Linear(c, scoreW, null, x, null, [batch, len, 1], h, 1);
            // sigmoid(z) = e^z / (e^z + e^0): the first entry of a softmax over (z, 0), which keeps the op set unchanged.
            string zero = g.Op("top.MulConst", [score], Stem(scoreW.Key) + ".zero", [batch, len, 1], OpAttr.F64("const_val", 0));
            string pair = g.Op("top.Concat", [score, zero], Stem(scoreW.Key) + ".pair", [batch, len, 2], OpAttr.SI32("axis", 2));
            string soft = g.Op("top.Softmax", [pair], Stem(scoreW.Key) + ".softmax", [batch, len, 2], OpAttr.SI32("axis", 2));
            string sigmoid = g.Op("top.Slice", [soft, "", "", ""], Stem(scoreW.Key) + ".sigmoid", [batch, len, 1],
                OpAttr.I64s("offset", 0, 0, 0), OpAttr.I64s("steps", 1, 1, 1), OpAttr.I64s("ends", batch, len, 1), OpAttr.I64s("axes"));
            string gated = g.Op("top.Mul", [shared, sigmoid], Stem(downW.Key) + ".gated", states);
            sum = g.Op("top.Add", [sum!, gated], module + ".shared_expert.add", states);
        }
        return ResidualBranch(c, sum!, states, name);
    }

    /// <summary>down(SiLU(gate(x)) · up(x)) of one expert, [batch, len, hidden].</summary>
    private static string SwiGlu(Context c, string x, WeightEntry gateW, WeightEntry upW, WeightEntry downW, int batch, int len, long hidden, long inter)
    {
        var g = c.G;
        string gate = Linear(c, gateW, null, x, null, [batch, len, inter], hidden, inter);
        string act = g.Op("top.SiLU", [gate], Stem(gateW.Key) + ".silu", [batch, len, inter]);
        string up = Linear(c, upW, null, x, null, [batch, len, inter], hidden, inter);
        string mul = g.Op("top.Mul", [act, up], Stem(upW.Key) + ".mul", [batch, len, inter]);
        return Linear(c, downW, null, mul, null, [batch, len, hidden], inter, hidden);
    }
}
