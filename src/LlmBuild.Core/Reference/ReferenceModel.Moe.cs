using System.Numerics.Tensors;
using LlmBuild.Core.Models;

namespace LlmBuild.Core.Reference;

/// <summary>
/// The mixture-of-experts MLP as Hugging Face's qwen2_moe / qwen3_moe compute it, token by token: the router's softmax
/// over every expert in f32, the k most probable experts (renormalised to sum 1 only with norm_topk_prob), each chosen
/// expert's SwiGLU run on just the tokens routed to it and added with its weight, then the shared expert scaled by
/// sigmoid of its gate. Sparse on purpose: the graph computes every expert densely, so the two forms check each other.
/// </summary>
public sealed partial class ReferenceModel
{
    private float[] SparseMoe(int layer, float[] y, int n, ReferenceTrace? trace)
    {
        MoeConfig moe = Config.Moe!;
        int hidden = Config.HiddenSize, experts = moe.NumExperts, topK = moe.ExpertsPerToken;
        float[] logits = Linear(y, n, hidden, Weight(Name(WeightRole.MoeRouter, layer)), experts, null);

        // Per token: its chosen experts and their weights.
        var chosen = new int[n * topK];
        var chosenWeights = new float[n * topK];
        var probabilities = new float[experts];
        for (int t = 0; t < n; t++)
        {
            var row = logits.AsSpan(t * experts, experts);
            float max = TensorPrimitives.Max(row), total = 0;
            for (int e = 0; e < experts; e++) total += probabilities[e] = MathF.Exp(row[e] - max);
            for (int e = 0; e < experts; e++) probabilities[e] /= total;
            // Largest first; on equal probabilities the lower expert index wins.
            int[] order = Enumerable.Range(0, experts).OrderByDescending(e => probabilities[e]).ThenBy(e => e).Take(topK).ToArray();
            if (trace is not null && topK < experts)
            {
                float last = probabilities[order[topK - 1]], nextBest = 0;
                for (int e = 0; e < experts; e++) if (!order.Contains(e)) nextBest = Math.Max(nextBest, probabilities[e]);
                trace.RouterMargin = Math.Min(trace.RouterMargin, (last - nextBest) / last);
            }
            float picked = 0;
            for (int slot = 0; slot < topK; slot++) picked += probabilities[order[slot]];
            for (int slot = 0; slot < topK; slot++)
            {
                chosen[t * topK + slot] = order[slot];
                chosenWeights[t * topK + slot] = moe.NormalizeTopK ? probabilities[order[slot]] / picked : probabilities[order[slot]];
            }
        }

        trace?.Routes.Add((layer, chosen));

        var output = new float[n * hidden];
        for (int e = 0; e < experts; e++)
        {
            var tokens = new List<(int Token, float Weight)>();
            for (int i = 0; i < chosen.Length; i++)
                if (chosen[i] == e) tokens.Add((i / topK, chosenWeights[i]));
            if (tokens.Count == 0) continue;
            var rows = new float[tokens.Count * hidden];
            for (int r = 0; r < tokens.Count; r++) y.AsSpan(tokens[r].Token * hidden, hidden).CopyTo(rows.AsSpan(r * hidden));
            float[] result = ExpertSwiGlu(rows, tokens.Count, moe.ExpertIntermediateSize,
                Name(WeightRole.ExpertGate, layer, e), Name(WeightRole.ExpertUp, layer, e), Name(WeightRole.ExpertDown, layer, e));
            for (int r = 0; r < tokens.Count; r++)
                TensorPrimitives.MultiplyAdd(result.AsSpan(r * hidden, hidden), tokens[r].Weight, output.AsSpan(tokens[r].Token * hidden, hidden),
                    output.AsSpan(tokens[r].Token * hidden, hidden));
        }

        if (moe.HasSharedExpert)
        {
            float[] shared = ExpertSwiGlu(y, n, moe.SharedExpertIntermediateSize, Name(WeightRole.SharedExpertGate, layer),
                Name(WeightRole.SharedExpertUp, layer), Name(WeightRole.SharedExpertDown, layer));
            float[] gate = Linear(y, n, hidden, Weight(Name(WeightRole.SharedExpertSigmoidGate, layer)), 1, null);
            for (int t = 0; t < n; t++)
            {
                float scale = 1f / (1f + MathF.Exp(-gate[t]));
                TensorPrimitives.MultiplyAdd(shared.AsSpan(t * hidden, hidden), scale, output.AsSpan(t * hidden, hidden), output.AsSpan(t * hidden, hidden));
            }
        }
        return output;
    }

    /// <summary>down(SiLU(gate·x) · up·x) over <paramref name="rows"/> rows of x.</summary>
    private float[] ExpertSwiGlu(float[] x, int rows, int inter, string gateName, string upName, string downName)
    {
        int hidden = Config.HiddenSize;
        float[] gate = Linear(x, rows, hidden, Weight(gateName), inter, null);
        float[] up = Linear(x, rows, hidden, Weight(upName), inter, null);
        for (int i = 0; i < gate.Length; i++) gate[i] = gate[i] / (1f + MathF.Exp(-gate[i])) * up[i];
        return Linear(gate, rows, inter, Weight(downName), hidden, null);
    }

    private string Name(WeightRole role, int layer, int expert) => _family.TensorName(role, layer, expert);
}
