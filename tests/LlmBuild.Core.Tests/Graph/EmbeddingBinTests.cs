using System.Buffers.Binary;
using LlmBuild.Core.Quantization;
using LlmBuild.Core.Tests.Reference;

namespace LlmBuild.Core.Tests.Graph;

[TestClass]
public sealed class EmbeddingBinTests
{
    [TestMethod]
    [DataRow("bf16")]
    [DataRow("f16")]
    public void EmbeddingBinHoldsTheTableInTheActivationDtype(string quantize)
    {
        string tiny = TestResolver.TinyModelDir;
        var model = TestResolver.Resolve(tiny, TestResolver.Options(tiny) with { EmbeddingDisk = true, Quantize = quantize });
        Assert.IsFalse(model.Pieces.Any(p => p.Name.StartsWith("embedding", StringComparison.Ordinal)));
        string path = Path.Combine(Path.GetTempPath(), $"llmbuild-embedding-{Guid.NewGuid():N}.bin");
        try
        {
            EmbeddingBin.Write(ReferenceModelTests.TinyCheckpoint, model, path);
            byte[] bytes = File.ReadAllBytes(path);
            int vocab = model.Config.VocabSize, hidden = model.Config.HiddenSize;
            Assert.AreEqual((long)vocab * hidden * 2, bytes.Length);
            var table = new float[(long)vocab * hidden];
            ReferenceModelTests.TinyCheckpoint.ReadFloat32("model.embed_tokens.weight", table);
            foreach (long i in new long[] { 0, 1, 63, 64 * 5000 + 17, table.Length - 1 })
            {
                ushort stored = BinaryPrimitives.ReadUInt16LittleEndian(bytes.AsSpan((int)(2 * i)));
                float value = quantize == "bf16" ? BitConverter.UInt32BitsToSingle((uint)stored << 16) : (float)BitConverter.UInt16BitsToHalf(stored);
                float expected = quantize == "bf16" ? table[i] : (float)(Half)table[i];
                Assert.AreEqual(expected, value, $"element {i}");
            }
        }
        finally
        {
            File.Delete(path);
        }
    }
}
