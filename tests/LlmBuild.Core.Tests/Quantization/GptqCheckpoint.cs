using System.Text.Json.Nodes;
using LlmBuild.Core.Checkpoints;
using LlmBuild.Core.Models;
using LlmBuild.Core.Quantization;
using LlmBuild.Core.Tests.Checkpoints;

namespace LlmBuild.Core.Tests.Quantization;

/// <summary>
/// The GPTQ packing rules as the tests know them from AutoGPTQ's description (independent of the unpacker):
/// qweight i32 [K/p, N] with p = 32/bits values per word along K, lowest bits first; qzeros i32 [G, N/p] packed the
/// same way along N, classic checkpoints storing zero − 1.
/// </summary>
internal static class GptqPacking
{
    /// <summary>Packs q[k, n] (K × N) into qweight words.</summary>
    public static int[] Weight(int[,] q, int bits)
    {
        int k = q.GetLength(0), n = q.GetLength(1), p = 32 / bits;
        var words = new int[k / p * n];
        for (int i = 0; i < k / p; i++)
            for (int c = 0; c < n; c++)
            {
                uint w = 0;
                for (int j = 0; j < p; j++) w |= (uint)q[i * p + j, c] << (bits * j);
                words[i * n + c] = unchecked((int)w);
            }
        return words;
    }

    /// <summary>Packs zeros[g, n] (G × N) into qzeros words along N.</summary>
    public static int[] Zeros(int[,] zeros, int bits, bool minusOne)
    {
        int groups = zeros.GetLength(0), n = zeros.GetLength(1), p = 32 / bits, mask = (1 << bits) - 1;
        var words = new int[groups * (n / p)];
        for (int grp = 0; grp < groups; grp++)
            for (int c = 0; c < n / p; c++)
            {
                uint w = 0;
                for (int j = 0; j < p; j++) w |= (uint)((zeros[grp, c * p + j] - (minusOne ? 1 : 0)) & mask) << (bits * j);
                words[grp * (n / p) + c] = unchecked((int)w);
            }
        return words;
    }
}

/// <summary>
/// Makes a GPTQ checkpoint of the example model: every block linear quantized to 4 bits in groups, with act-order
/// (desc_act) group indices scattered over K when asked, packed the classic AutoGPTQ way; everything else copied.
/// The rounding is plain round-to-nearest (the packing, not GPTQ's error feedback, is what the build must honour).
/// </summary>
internal static class GptqCheckpoint
{
    private static readonly string[] LinearSuffixes =
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];

    public static string Create(string sourceDir, int groupSize, bool actOrder, int seed = 7)
    {
        string dir = Path.Combine(Path.GetTempPath(), "gptq-checkpoints", $"g{groupSize}-{(actOrder ? "act" : "seq")}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(dir);
        var tensors = new List<TestFiles.Tensor>();
        var random = new Random(seed);
        using (ICheckpoint source = CheckpointLoader.Open(sourceDir))
        {
            foreach (string name in source.TensorNames)
            {
                TensorInfo info = source.GetInfo(name);
                var values = new float[info.ElementCount];
                source.ReadFloat32(name, values);
                string stem = name.EndsWith(".weight", StringComparison.Ordinal) ? name[..^".weight".Length] : name;
                if (LinearSuffixes.Any(s => stem.EndsWith("." + s, StringComparison.Ordinal)) && info.Shape.Length == 2)
                    tensors.AddRange(Quantize(stem, values, (int)info.Shape[0], (int)info.Shape[1], groupSize, actOrder, random));
                else
                {
                    var bits = new ushort[values.Length];
                    FloatFormats.FloatToBFloat16(values, bits);
                    tensors.Add(new(name, "BF16", info.Shape, TestFiles.Bytes(bits)));
                }
            }
        }
        TestFiles.WriteSafetensors(Path.Combine(dir, "model.safetensors"), tensors);
        foreach (string f in Directory.GetFiles(sourceDir).Where(f => !f.EndsWith(".safetensors", StringComparison.Ordinal)))
            File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
        var config = (JsonObject)JsonNode.Parse(File.ReadAllText(Path.Combine(sourceDir, "config.json")))!;
        config["quantization_config"] = new JsonObject
        {
            ["quant_method"] = "gptq", ["bits"] = 4, ["group_size"] = groupSize, ["sym"] = false, ["desc_act"] = actOrder,
        };
        File.WriteAllText(Path.Combine(dir, "config.json"), config.ToJsonString());
        return dir;
    }

    /// <summary>W [N, K] → qweight, qzeros, scales (f16) and g_idx; asymmetric 4-bit, zero in 1..15 (classic storage).</summary>
    private static IEnumerable<TestFiles.Tensor> Quantize(string stem, float[] w, int n, int k, int g, bool actOrder, Random random)
    {
        int groups = k / g;
        int[] gIdx = Enumerable.Range(0, k).Select(i => i / g).ToArray();
        if (actOrder) gIdx = gIdx.OrderBy(_ => random.Next()).ToArray();
        var q = new int[k, n];
        var zeros = new int[groups, n];
        var scaleBits = new ushort[groups * n];
        for (int row = 0; row < n; row++)
            for (int grp = 0; grp < groups; grp++)
            {
                float lo = 0, hi = 0;
                for (int i = 0; i < k; i++)
                    if (gIdx[i] == grp) { lo = Math.Min(lo, w[(long)row * k + i]); hi = Math.Max(hi, w[(long)row * k + i]); }
                ushort sb = FloatFormats.FloatToHalfScalar(Math.Max((hi - lo) / 15f, 1e-6f));
                float scale = FloatFormats.HalfToFloatScalar(sb);
                int zero = Math.Clamp((int)MathF.Round(-lo / scale), 1, 15);
                scaleBits[grp * n + row] = sb;
                zeros[grp, row] = zero;
                for (int i = 0; i < k; i++)
                    if (gIdx[i] == grp) q[i, row] = Math.Clamp((int)MathF.Round(w[(long)row * k + i] / scale) + zero, 0, 15);
            }
        yield return new(stem + ".qweight", "I32", [k / 8, n], TestFiles.Bytes(GptqPacking.Weight(q, 4)));
        yield return new(stem + ".qzeros", "I32", [groups, n / 8], TestFiles.Bytes(GptqPacking.Zeros(zeros, 4, minusOne: true)));
        yield return new(stem + ".scales", "F16", [groups, n], TestFiles.Bytes(scaleBits));
        yield return new(stem + ".g_idx", "I32", [k], TestFiles.Bytes(gIdx));
    }
}
