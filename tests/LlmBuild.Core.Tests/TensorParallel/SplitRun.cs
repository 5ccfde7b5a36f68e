using TP = LlmBuild.Core.Plan.TensorParallel;
using LlmBuild.Core.Graph;
using LlmBuild.Core.Models;
using LlmBuild.Core.Plan;

namespace LlmBuild.Core.Tests.TensorParallel;

/// <summary>
/// Test-side driver of a tensor-parallel block: inputs for a block piece, the runtime's part of the contract (give each
/// device its kv heads of the history, pass every step's outputs to the next step's inputs of the same name, gather the
/// devices' k/v by heads), and the comparison with the whole block.
/// </summary>
internal static class SplitRun
{
    /// <summary>Random states and history, positions and the additive mask a runtime would give the piece.</summary>
    public static Dictionary<string, float[]> Inputs(PieceGraph whole, int seed)
    {
        var rng = new Random(seed);
        var inputs = new Dictionary<string, float[]>(StringComparer.Ordinal);
        long[] states = whole.Tensor("input_states").Shape;
        int batch = (int)states[0], len = (int)states[1];
        int history = whole.HasTensor("history_k") ? (int)whole.Tensor("history_k").Shape[1] : 0;
        int visible = history / 2; // history rows [visible, history) are unused cache rows, masked out
        inputs["input_states"] = Random(rng, whole.Tensor("input_states").ElementCount, 2f);
        inputs["position_ids"] = Enumerable.Range(0, batch * len).Select(i => (float)(visible + i % len)).ToArray();
        if (whole.HasTensor("attention_mask"))
        {
            int keys = history + len;
            var mask = new float[batch * len * keys];
            for (int b = 0; b < batch; b++)
                for (int i = 0; i < len; i++)
                    for (int j = 0; j < keys; j++)
                    {
                        bool seen = j < history ? j < visible : j - history <= i;
                        mask[(b * len + i) * keys + j] = seen ? 0 : NetContract.MaskFill;
                    }
            inputs["attention_mask"] = mask;
        }
        if (history > 0)
        {
            inputs["history_k"] = Random(rng, whole.Tensor("history_k").ElementCount, 1.5f);
            inputs["history_v"] = Random(rng, whole.Tensor("history_v").ElementCount, 1.5f);
        }
        return inputs;
    }

    private static float[] Random(Random rng, long count, float scale)
    {
        var data = new float[count];
        for (int i = 0; i < data.Length; i++) data[i] = scale * (float)(rng.NextDouble() * 2 - 1);
        return data;
    }

    /// <summary>The whole piece's outputs (output_states, k_cache, v_cache) from the interpreter.</summary>
    public static IReadOnlyDictionary<string, float[]> RunWhole(ResolvedModel model, Piece piece, IWeightSource weights, Dictionary<string, float[]> inputs) =>
        new GraphInterpreter(PieceGraphBuilder.Build(model, piece), weights).Run(inputs);

    /// <summary>
    /// Runs the 3·D shard graphs with the interpreter, passing outputs on by name (the all-reduce), and returns
    /// output_states (checked equal on every device) and k/v gathered from the devices by heads.
    /// </summary>
    public static IReadOnlyDictionary<string, float[]> RunSplit(ResolvedModel model, Piece piece, IWeightSource weights, Dictionary<string, float[]> inputs)
    {
        int devices = TP.Devices(model), kvh = model.Config.NumKvHeads, d = model.Config.HeadDim;
        var passed = new Dictionary<string, float[]>(StringComparer.Ordinal);
        var kParts = new float[devices][];
        var vParts = new float[devices][];
        var outputs = new float[devices][];
        for (int step = 0; step < TP.Steps; step++)
        {
            var produced = new Dictionary<string, float[]>(StringComparer.Ordinal);
            for (int device = 0; device < devices; device++)
            {
                PieceGraph graph = PieceGraphBuilder.BuildShard(model, piece, step, device);
                var given = new Dictionary<string, float[]>(passed, StringComparer.Ordinal);
                foreach (var (name, data) in inputs)
                    given[name] = name is "history_k" or "history_v" ? Heads(data, kvh, d, device * kvh / devices, kvh / devices) : data;
                var o = new GraphInterpreter(graph, weights).Run(given);
                foreach (var (name, data) in o)
                {
                    switch (name)
                    {
                        case "k_cache": kParts[device] = data; break;
                        case "v_cache": vParts[device] = data; break;
                        case "output_states": outputs[device] = data; break;
                        default: produced[name] = data; break;
                    }
                }
            }
            foreach (var (name, data) in produced) passed[name] = data;
        }
        for (int device = 1; device < devices; device++)
            CollectionAssert.AreEqual(outputs[0], outputs[device], $"output_states of device {device} differs from device 0's");
        return new Dictionary<string, float[]>
        {
            ["output_states"] = outputs[0],
            ["k_cache"] = GatherHeads(kParts, kvh / devices, d),
            ["v_cache"] = GatherHeads(vParts, kvh / devices, d),
        };
    }

    /// <summary>Heads [start, start + count) of a [rows, heads, d] tensor.</summary>
    public static float[] Heads(float[] data, int heads, int d, int start, int count)
    {
        int rows = data.Length / (heads * d);
        var result = new float[rows * count * d];
        for (int r = 0; r < rows; r++)
            Array.Copy(data, (r * heads + start) * d, result, r * count * d, count * d);
        return result;
    }

    /// <summary>The devices' [rows, headsPerDevice, d] tensors side by side along the heads: [rows, heads, d].</summary>
    public static float[] GatherHeads(float[][] parts, int headsPerDevice, int d)
    {
        int devices = parts.Length, run = headsPerDevice * d, rows = parts[0].Length / run;
        var result = new float[rows * devices * run];
        for (int r = 0; r < rows; r++)
            for (int dev = 0; dev < devices; dev++)
                Array.Copy(parts[dev], r * run, result, (r * devices + dev) * run, run);
        return result;
    }

    /// <summary>max |actual − expected| / max |expected|.</summary>
    public static double RelativeDiff(float[] actual, float[] expected)
    {
        Assert.AreEqual(expected.Length, actual.Length);
        double diff = 0, scale = 0;
        for (int i = 0; i < expected.Length; i++)
        {
            diff = Math.Max(diff, Math.Abs((double)actual[i] - expected[i]));
            scale = Math.Max(scale, Math.Abs((double)expected[i]));
        }
        return diff / scale;
    }
}
