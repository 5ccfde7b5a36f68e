using System.Text.Json.Nodes;
using LlmBuild.Core.Checkpoints;
using LlmBuild.Core.Numerics;
using LlmBuild.Core.Tests.Checkpoints;

namespace LlmBuild.Core.Tests.Quantization;

/// <summary>
/// Packing rules as the tests know them from the libraries' descriptions (independent of the unpacker). GPTQ:
/// qweight i32 [K/p, N] with p = 32/bits values per word along K, lowest bits first; qzeros i32 [G, N/p] packed the
/// same way along N, classic checkpoints storing zero − 1. AWQ gemm: along N in nibble order 0,2,4,6,1,3,5,7.
/// </summary>
internal static class PackingRules
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

    private static readonly int[] AwqOrder = [0, 2, 4, 6, 1, 3, 5, 7];

    /// <summary>AutoAWQ gemm: rows × N values packed along N, nibble j of word c holding channel 8c + (0,2,4,6,1,3,5,7)[j].</summary>
    public static int[] Awq(int rows, int n, Func<int, int, int> value)
    {
        var words = new int[rows * (n / 8)];
        for (int i = 0; i < rows; i++)
            for (int c = 0; c < n / 8; c++)
            {
                uint w = 0;
                for (int j = 0; j < 8; j++) w |= (uint)value(i, c * 8 + AwqOrder[j]) << (4 * j);
                words[i * (n / 8) + c] = unchecked((int)w);
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

/// <summary>The pre-quantized formats the test checkpoints are packed in.</summary>
public enum PackedFormat { Gptq, Awq, CompressedTensors }

/// <summary>
/// Makes a pre-quantized checkpoint of the example model: every block linear quantized to 4 bits in groups
/// (asymmetric), with act-order group indices scattered over K when asked (GPTQ g_idx, compressed-tensors
/// weight_g_idx), packed as the format's library does; everything else copied as bf16. The rounding is plain
/// round-to-nearest: the packing, not the quantizer's error feedback, is what the build must honour.
/// </summary>
internal static class PreQuantizedCheckpoint
{
    private static readonly string[] LinearSuffixes =
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];

    public static string Create(string sourceDir, PackedFormat format, int groupSize, bool actOrder, int seed = 7)
    {
        if (actOrder && format == PackedFormat.Awq) throw new ArgumentException("AWQ has no act-order layout.");
        string dir = Path.Combine(Path.GetTempPath(), "prequantized-checkpoints", $"{format}-g{groupSize}-{(actOrder ? "act" : "seq")}-{Guid.NewGuid():N}");
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
                {
                    var q = Quantize(values, (int)info.Shape[0], (int)info.Shape[1], groupSize, actOrder, random);
                    tensors.AddRange(format switch
                    {
                        PackedFormat.Gptq => Gptq(stem, q),
                        PackedFormat.Awq => Awq(stem, q),
                        _ => CompressedTensors(stem, q),
                    });
                }
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
        config["quantization_config"] = format switch
        {
            PackedFormat.Gptq => new JsonObject
            {
                ["quant_method"] = "gptq", ["bits"] = 4, ["group_size"] = groupSize, ["sym"] = false, ["desc_act"] = actOrder,
            },
            PackedFormat.Awq => new JsonObject
            {
                ["quant_method"] = "awq", ["w_bit"] = 4, ["q_group_size"] = groupSize, ["zero_point"] = true, ["version"] = "gemm",
            },
            _ => new JsonObject
            {
                ["quant_method"] = "compressed-tensors", ["format"] = "pack-quantized", ["ignore"] = new JsonArray("lm_head"),
                ["config_groups"] = new JsonObject
                {
                    ["group_0"] = new JsonObject
                    {
                        ["targets"] = new JsonArray("Linear"),
                        ["weights"] = new JsonObject
                        {
                            ["num_bits"] = 4, ["type"] = "int", ["symmetric"] = false, ["strategy"] = "group",
                            ["group_size"] = groupSize, ["actorder"] = actOrder ? "group" : null,
                        },
                    },
                },
            },
        };
        File.WriteAllText(Path.Combine(dir, "config.json"), config.ToJsonString());
        return dir;
    }

    /// <summary>A quantized W [N, K]: q[k, n], zeros and f16 scale bits per [group, n], and each input's group.</summary>
    private sealed record Quantized(int N, int K, int G, int[,] Q, int[,] Zeros, ushort[] ScaleBits, int[] GIdx)
    {
        public int Groups => K / G;
    }

    /// <summary>Asymmetric 4-bit round-to-nearest per (row, group); zero in 1..15 so classic GPTQ's zero − 1 fits.</summary>
    private static Quantized Quantize(float[] w, int n, int k, int g, bool actOrder, Random random)
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
        return new Quantized(n, k, g, q, zeros, scaleBits, gIdx);
    }

    private static IEnumerable<TestFiles.Tensor> Gptq(string stem, Quantized q)
    {
        yield return new(stem + ".qweight", "I32", [q.K / 8, q.N], TestFiles.Bytes(PackingRules.Weight(q.Q, 4)));
        yield return new(stem + ".qzeros", "I32", [q.Groups, q.N / 8], TestFiles.Bytes(PackingRules.Zeros(q.Zeros, 4, minusOne: true)));
        yield return new(stem + ".scales", "F16", [q.Groups, q.N], TestFiles.Bytes(q.ScaleBits));
        yield return new(stem + ".g_idx", "I32", [q.K], TestFiles.Bytes(q.GIdx));
    }

    private static IEnumerable<TestFiles.Tensor> Awq(string stem, Quantized q)
    {
        yield return new(stem + ".qweight", "I32", [q.K, q.N / 8], TestFiles.Bytes(PackingRules.Awq(q.K, q.N, (k, n) => q.Q[k, n])));
        yield return new(stem + ".qzeros", "I32", [q.Groups, q.N / 8], TestFiles.Bytes(PackingRules.Awq(q.Groups, q.N, (g, n) => q.Zeros[g, n])));
        yield return new(stem + ".scales", "F16", [q.Groups, q.N], TestFiles.Bytes(q.ScaleBits));
    }

    /// <summary>pack-quantized: weight_packed [N, K/8] along K; weight_scale [N, G]; weight_zero_point [N/8, G] along N.</summary>
    private static IEnumerable<TestFiles.Tensor> CompressedTensors(string stem, Quantized q)
    {
        var packed = new int[q.N * (q.K / 8)];
        for (int r = 0; r < q.N; r++)
            for (int c = 0; c < q.K / 8; c++)
            {
                uint w = 0;
                for (int j = 0; j < 8; j++) w |= (uint)q.Q[c * 8 + j, r] << (4 * j);
                packed[r * (q.K / 8) + c] = unchecked((int)w);
            }
        var scales = new ushort[q.N * q.Groups];
        for (int r = 0; r < q.N; r++) for (int g = 0; g < q.Groups; g++) scales[r * q.Groups + g] = q.ScaleBits[g * q.N + r];
        var zeroPoints = new int[q.N / 8 * q.Groups];
        for (int rr = 0; rr < q.N / 8; rr++)
            for (int g = 0; g < q.Groups; g++)
            {
                uint w = 0;
                for (int i = 0; i < 8; i++) w |= (uint)q.Zeros[g, rr * 8 + i] << (4 * i);
                zeroPoints[rr * q.Groups + g] = unchecked((int)w);
            }
        yield return new(stem + ".weight_packed", "I32", [q.N, q.K / 8], TestFiles.Bytes(packed));
        yield return new(stem + ".weight_scale", "F16", [q.N, q.Groups], TestFiles.Bytes(scales));
        yield return new(stem + ".weight_zero_point", "I32", [q.N / 8, q.Groups], TestFiles.Bytes(zeroPoints));
        yield return new(stem + ".weight_shape", "I32", [2], TestFiles.Bytes(new[] { q.N, q.K }));
        yield return new(stem + ".weight_g_idx", "I32", [q.K], TestFiles.Bytes(q.GIdx));
    }
}
