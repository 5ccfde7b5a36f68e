using System.Buffers.Binary;
using System.Text;
using LlmBuild.Core.Checkpoints;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Models;
using LlmBuild.Core.Quantization;

namespace LlmBuild.Core.Tests.Checkpoints;

[TestClass]
public sealed class GgufReaderTests
{
    private static string Write(byte[] bytes)
    {
        string path = Path.Combine(TestFiles.TempDir(), "model.gguf");
        File.WriteAllBytes(path, bytes);
        return path;
    }

    private static string Code(Action action) => Assert.ThrowsExactly<LlmBuildException>(action).Code;

    /// <summary>Reads everything a build reads: every tensor, the synthesized config, the tokenizer files' content.</summary>
    private static void ReadAll(string path)
    {
        using var checkpoint = GgufCheckpoint.Open(path);
        foreach (string name in checkpoint.TensorNames)
        {
            var info = checkpoint.GetInfo(name);
            if (!DTypes.IsFloat(info.DType)) continue;
            checkpoint.ReadFloat32(name, 0, new float[info.ElementCount]);
            checkpoint.ReadRaw(name, 0, new byte[Math.Min(info.ByteLength, 100)]);
        }
        ModelConfig.Load(path);
        GgufTokenizerFiles.Tokenizer(checkpoint.Gguf);
    }

    [TestMethod]
    public void ReadsNamesShapesConfigAndUnpermutesLlamaKeys()
    {
        string path = Write(GgufTestFile.SmallLlama());
        ReadAll(path);
        using var checkpoint = GgufCheckpoint.Open(path);
        Assert.AreEqual(12, checkpoint.TensorNames.Count);
        CollectionAssert.AreEqual(new long[] { 32, 64 }, checkpoint.GetInfo("model.layers.0.self_attn.k_proj.weight").Shape);
        Assert.AreEqual(TensorDType.F16, checkpoint.GetInfo("model.layers.0.self_attn.k_proj.weight").DType);
        Assert.AreEqual(TensorDType.F32, checkpoint.GetInfo("model.layers.0.self_attn.q_proj.weight").DType, "Q4_0 reads as its f32 dequantization");
        var config = ModelConfig.Load(path);
        Assert.AreEqual((64, 1, 2, 1, 32, 8, true, 1e-5), (config.HiddenSize, config.NumLayers, config.NumHeads, config.NumKvHeads, config.HeadDim, config.VocabSize, config.TieWordEmbeddings, config.RmsNormEps));

        // k_proj: one kv head of 32 rows; llama.cpp stored Hugging Face row j·16 + i at row 2i + j.
        var gguf = checkpoint.Gguf;
        var source = gguf.Tensors.Single(t => t.Name == "blk.0.attn_k.weight");
        byte[] file = File.ReadAllBytes(path);
        float StoredRow(int row, int col) => (float)BitConverter.UInt16BitsToHalf(BinaryPrimitives.ReadUInt16LittleEndian(file.AsSpan((int)source.Offset + (row * 64 + col) * 2)));
        float[] hf = new float[32 * 64];
        checkpoint.ReadFloat32("model.layers.0.self_attn.k_proj.weight", 0, hf);
        for (int row = 0; row < 32; row++)
        {
            int j = row / 16, i = row % 16;
            for (int col = 0; col < 64; col++) Assert.AreEqual(StoredRow(2 * i + j, col), hf[row * 64 + col], $"row {row} col {col}");
        }
        // The bias is permuted element by element, like the rows.
        var biasSource = gguf.Tensors.Single(t => t.Name == "blk.0.attn_k.bias");
        float[] bias = new float[32];
        checkpoint.ReadFloat32("model.layers.0.self_attn.k_proj.bias", 0, bias);
        for (int row = 0; row < 32; row++)
            Assert.AreEqual(BinaryPrimitives.ReadSingleLittleEndian(file.AsSpan((int)biasSource.Offset + 4 * (2 * (row % 16) + row / 16))), bias[row], $"bias {row}");
        // Raw reads follow the same row order.
        byte[] raw = new byte[64 * 2];
        checkpoint.ReadRaw("model.layers.0.self_attn.k_proj.weight", 16 * 64 * 2, raw);
        Assert.AreEqual(StoredRow(1, 0), (float)BitConverter.UInt16BitsToHalf(BinaryPrimitives.ReadUInt16LittleEndian(raw)));
    }

    /// <summary>
    /// llama 3.1+ files store RoPE scaling as divisors per frequency (rope_freqs.weight); the config gets Hugging Face's
    /// llama3 rope_scaling back. The divisors here follow transformers' llama3 rule, written out independently:
    /// inv_freq' = inv_freq / factor for wavelengths above 8192, unchanged below 8192 / 4, blended between.
    /// </summary>
    [TestMethod]
    public void RopeFrequencyFactorsBecomeLlama3Scaling()
    {
        const double Theta = 10000, Factor = 8;
        float[] divisors = new float[16];
        for (int i = 0; i < 16; i++)
        {
            double invFreq = 1 / Math.Pow(Theta, 2.0 * i / 32), wavelength = 2 * Math.PI / invFreq;
            double scaled = wavelength > 8192 ? invFreq / Factor : wavelength < 2048 ? invFreq
                : (1 - (8192 / wavelength - 1) / 3) * invFreq / Factor + (8192 / wavelength - 1) / 3 * invFreq;
            divisors[i] = (float)(invFreq / scaled);
        }
        Assert.IsTrue(divisors.Distinct().Count() > 2, "the test frequencies cover the blended band");
        string path = Write(GgufTestFile.SmallLlama(ropeFactors: divisors));
        var scaling = ModelConfig.Load(path).RopeScaling;
        Assert.AreEqual(new RopeScaling("llama3", Factor, 1.0, 4.0, 8192), scaling);
        using (var checkpoint = GgufCheckpoint.Open(path)) Assert.IsFalse(checkpoint.TensorNames.Any(n => n.Contains("rope", StringComparison.Ordinal)));

        divisors[3] *= 1.01f;
        Assert.AreEqual(ErrorCodes.UnsupportedGgufArchitecture, Code(() => ModelConfig.Load(Write(GgufTestFile.SmallLlama(ropeFactors: divisors)))));
    }

    [TestMethod]
    public void MalformedFilesAreCodedErrors()
    {
        byte[] good = GgufTestFile.SmallLlama();
        byte[] Patched(Action<byte[]> patch) { byte[] b = (byte[])good.Clone(); patch(b); return b; }
        string Replace(string from, string to) => Write(Encoding.Latin1.GetBytes(Encoding.Latin1.GetString(good).Replace(from, to)));

        Assert.AreEqual(ErrorCodes.BadGgufHeader, Code(() => GgufCheckpoint.Open(Write(Patched(b => b[0] = (byte)'X')))));
        Assert.AreEqual(ErrorCodes.BadGgufHeader, Code(() => GgufCheckpoint.Open(Write(Patched(b => b[4] = 1)))), "version 1");
        Assert.AreEqual(ErrorCodes.BadGgufHeader, Code(() => GgufCheckpoint.Open(Write(Patched(b => b[15] = 0x7F)))), "tensor count");
        Assert.AreEqual(ErrorCodes.BadGgufHeader, Code(() => GgufCheckpoint.Open(Write(good[..200]))), "truncated metadata");
        Assert.AreEqual(ErrorCodes.BadGgufTensorData, Code(() => GgufCheckpoint.Open(Write(good[..^10]))), "truncated data");
        Assert.AreEqual(ErrorCodes.BadGgufAlignment, Code(() => GgufCheckpoint.Open(Write(GgufTestFile.SmallLlama(alignment: 48)))));
        Assert.AreEqual(ErrorCodes.BadGgufMetadata, Code(() => GgufCheckpoint.Open(Replace("llama.block_count", "llama.context_length"))), "duplicate key");
        Assert.AreEqual(ErrorCodes.UnmappedGgufTensor, Code(() => GgufCheckpoint.Open(Replace("blk.0.ffn_up.weight", "blk.0.ffn_xx.weight"))));
        Assert.AreEqual(ErrorCodes.UnsupportedGgufArchitecture, Code(() => ModelConfig.Load(Replace("\u0008\0\0\0\u0005\0\0\0\0\0\0\0llama", "\u0008\0\0\0\u0005\0\0\0\0\0\0\0gemma"))));
        Assert.AreEqual(ErrorCodes.BadGgufTokenizer, Code(() => GgufTokenizerFiles.Tokenizer(GgufFile.Read(Replace("tokenizer.ggml.model", "tokenizer.ggml.mode_")))));

        // A tensor of a type LlmBuild does not read is refused by name.
        var gguf = GgufFile.Read(Write(good));
        int typeField = TypeFieldOffset(good, "blk.0.ffn_gate.weight", 2);
        var e = Assert.ThrowsExactly<LlmBuildException>(() => GgufCheckpoint.Open(Write(Patched(b => b[typeField] = (byte)GgmlType.IQ2_XXS))));
        Assert.AreEqual(ErrorCodes.UnsupportedGgmlType, e.Code);
        StringAssert.Contains(e.Message, "IQ2_XXS");
        Assert.AreEqual(ErrorCodes.BadGgufTensorInfo, Code(() => GgufCheckpoint.Open(Write(Patched(b => b[typeField - 16] = 0)))), "a zero dimension");
        Assert.AreEqual(ErrorCodes.BadGgufAlignment, Code(() => GgufCheckpoint.Open(Write(Patched(b => b[typeField + 4] += 4)))), "misaligned offset");
        Assert.AreEqual(ErrorCodes.BadGgufTensorData, Code(() => GgufCheckpoint.Open(Write(Patched(b => b[typeField + 4] -= 32)))), "overlapping data");
        Assert.IsTrue(gguf.Tensors.Count > 0);
    }

    /// <summary>The byte offset of a tensor info's type field (after its name, rank and dims).</summary>
    private static int TypeFieldOffset(byte[] file, string name, int rank)
    {
        byte[] key = Encoding.UTF8.GetBytes(name);
        int at = file.AsSpan().IndexOf(key);
        return at + key.Length + 4 + 8 * rank;
    }

    /// <summary>
    /// A few thousand mutations of a valid file (bytes flipped, fields overwritten with edge values, truncations): reading
    /// everything either succeeds or fails with a coded error — never another exception, a hang or a huge allocation.
    /// </summary>
    [TestMethod]
    public void FuzzedFilesFailOnlyWithCodedErrors()
    {
        byte[] good = GgufTestFile.SmallLlama();
        string path = Path.Combine(TestFiles.TempDir(), "fuzz.gguf");
        ulong[] edges = [0, 1, 2, 3, 31, 32, 255, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0x7FFFFFFFFFFFFFFF, 0x8000000000000000, ulong.MaxValue];
        var random = new Random(20261206);
        int coded = 0, clean = 0;
        for (int iteration = 0; iteration < 3000; iteration++)
        {
            byte[] bytes = (byte[])good.Clone();
            int mutations = 1 + random.Next(3);
            for (int m = 0; m < mutations; m++)
            {
                int header = Math.Min(bytes.Length, 1400);
                switch (random.Next(5))
                {
                    case 0: bytes[random.Next(header)] ^= (byte)(1 << random.Next(8)); break;
                    case 1: bytes[random.Next(header)] = (byte)random.Next(256); break;
                    case 2:
                        int at = random.Next(Math.Max(1, header - 8));
                        BinaryPrimitives.WriteUInt64LittleEndian(bytes.AsSpan(at, Math.Min(8, bytes.Length - at)) is { Length: 8 } s ? s : new byte[8], edges[random.Next(edges.Length)]);
                        break;
                    case 3: bytes = bytes[..random.Next(bytes.Length)]; break;
                    default: bytes[random.Next(bytes.Length)] = (byte)random.Next(256); break;
                }
            }
            File.WriteAllBytes(path, bytes);
            try
            {
                ReadAll(path);
                clean++;
            }
            catch (LlmBuildException e)
            {
                Assert.IsTrue(ErrorCodes.IsValid(e.Code));
                coded++;
            }
            catch (Exception e)
            {
                Assert.Fail($"iteration {iteration}: {e.GetType().Name}: {e.Message}\n{e.StackTrace}");
            }
        }
        Console.WriteLine($"{coded} coded errors, {clean} files still readable");
        Assert.IsTrue(coded > 1000, $"only {coded} mutations were detected");
    }
}
