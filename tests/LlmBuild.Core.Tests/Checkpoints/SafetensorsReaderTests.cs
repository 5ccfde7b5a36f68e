using LlmBuild.Core.Checkpoints;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Numerics;

namespace LlmBuild.Core.Tests.Checkpoints;

[TestClass]
public sealed class SafetensorsReaderTests
{
    [TestMethod]
    public void OpensTheExampleCheckpointLazily()
    {
        string dir = Path.Combine(TestFiles.RepoRoot(), "examples", "tiny-qwen2", "checkpoint");
        using var c = CheckpointLoader.Open(dir);
        CollectionAssert.AreEqual(new[] { "model.safetensors" }, c.Files.ToArray());
        var embed = c.GetInfo("model.embed_tokens.weight");
        Assert.AreEqual(TensorDType.BF16, embed.DType);
        CollectionAssert.AreEqual(new long[] { 151936, 64 }, embed.Shape);
        Assert.IsTrue(c.Contains("model.layers.3.self_attn.q_proj.bias"));
        CollectionAssert.AreEqual(c.TensorNames.Order(StringComparer.Ordinal).ToArray(), c.TensorNames.ToArray());
        // Streaming reads agree with a whole-tensor read.
        var q = c.GetInfo("model.layers.0.self_attn.q_proj.weight");
        float[] all = new float[q.ElementCount];
        c.ReadFloat32(q.Name, all);
        float[] part = new float[100];
        c.ReadFloat32(q.Name, 1000, part);
        CollectionAssert.AreEqual(all.AsSpan(1000, 100).ToArray(), part);
        Assert.IsTrue(all.Any(v => v != 0));
    }

    [TestMethod]
    public void RawReadsCopyTheFilesBytesAndAFileCutShortWhileOpenIsACodedError()
    {
        string dir = TestFiles.TempDir();
        string path = Path.Combine(dir, "model.safetensors");
        byte[] data = Enumerable.Range(0, 3 << 20).Select(i => (byte)(i * 7 + (i >> 9))).ToArray();
        TestFiles.WriteSafetensors(path, [new("w", "U8", [data.Length], data)]);
        using var c = CheckpointLoader.Open(dir);
        var whole = new byte[data.Length];
        c.ReadRaw("w", whole);
        CollectionAssert.AreEqual(data, whole);
        var part = new byte[1000];
        c.ReadRaw("w", (2 << 20) + 5, part);
        CollectionAssert.AreEqual(data.AsSpan((2 << 20) + 5, 1000).ToArray(), part);
        // Cut short after opening (another program rewriting it): a read past the new end is a coded error, not a crash
        // (a mapped read of a page past the end of a file is a SIGBUS).
        using (var f = new FileStream(path, FileMode.Open, FileAccess.Write, FileShare.ReadWrite | FileShare.Delete)) f.SetLength(f.Length - (2 << 20));
        var e = Assert.ThrowsExactly<LlmBuildException>(() => c.ReadRaw("w", (2 << 20) + 5, part));
        Assert.AreEqual(ErrorCodes.ReadFailed, e.Code);
        StringAssert.Contains(e.Message, "changed while it was read");
    }

    [TestMethod]
    public void ReadsEveryDtypeExactly()
    {
        string dir = TestFiles.TempDir();
        string path = Path.Combine(dir, "model.safetensors");
        float[] f32 = [1.5f, -2f, 1e-20f, 3e30f];
        ushort[] f16 = [0x3C00, 0xC000, 0x0001, 0x7BFF];
        ushort[] bf16 = [0x3F80, 0xC040, 0x0001, 0x7F7F];
        TestFiles.WriteSafetensors(path,
        [
            new("f32", "F32", [2, 2], TestFiles.Bytes(f32)),
            new("f16", "F16", [4], TestFiles.Bytes(f16)),
            new("bf16", "BF16", [4], TestFiles.Bytes(bf16)),
            new("i32", "I32", [2], TestFiles.Bytes(new[] { -5, 7 })),
            new("u8", "U8", [3], [1, 2, 255]),
            new("i8", "I8", [2], [0xFF, 0x01]),
            new("f8", "F8_E4M3", [3], [0x38, 0x7E, 0xB8]),
            new("empty", "F32", [0, 4], []),
        ]);
        using var c = CheckpointLoader.Open(dir);
        float[] got = new float[4];
        c.ReadFloat32("f32", got);
        CollectionAssert.AreEqual(f32, got);
        c.ReadFloat32("f16", got);
        CollectionAssert.AreEqual(f16.Select(FloatFormats.HalfToFloatScalar).ToArray(), got);
        c.ReadFloat32("bf16", got);
        CollectionAssert.AreEqual(bf16.Select(FloatFormats.BFloat16ToFloatScalar).ToArray(), got);
        float[] f8 = new float[3];
        c.ReadFloat32("f8", f8);
        CollectionAssert.AreEqual(new[] { 1f, 448f, -1f }, f8);
        byte[] raw = new byte[8];
        c.ReadRaw("i32", raw);
        CollectionAssert.AreEqual(TestFiles.Bytes(new[] { -5, 7 }), raw);
        Assert.AreEqual(TensorDType.I8, c.GetInfo("i8").DType);
        Assert.AreEqual(0, c.GetInfo("empty").ElementCount);
        var e = Assert.ThrowsExactly<LlmBuildException>(() => c.ReadFloat32("u8", new float[3]));
        Assert.AreEqual(ErrorCodes.UnsupportedTensorDType, e.Code);
        e = Assert.ThrowsExactly<LlmBuildException>(() => c.GetInfo("nope"));
        Assert.AreEqual(ErrorCodes.TensorNotFound, e.Code);
    }

    [TestMethod]
    public void FolderWithoutWeightsIsACodedError()
    {
        string dir = TestFiles.TempDir();
        File.WriteAllText(Path.Combine(dir, "config.json"), "{}");
        var e = Assert.ThrowsExactly<LlmBuildException>(() => CheckpointLoader.Open(dir));
        Assert.AreEqual(ErrorCodes.NoWeightFiles, e.Code);
        StringAssert.Contains(e.Message, dir);
    }
}
