using System.Buffers.Binary;
using LlmBuild.Core.Checkpoints;
using LlmBuild.Core.Diagnostics;

namespace LlmBuild.Core.Tests.Checkpoints;

[TestClass]
public sealed class SafetensorsValidationTests
{
    private static TestFiles.Tensor[] Two() =>
    [
        new("a", "F32", [2, 2], TestFiles.Bytes(new[] { 1f, 2f, 3f, 4f })),
        new("b", "BF16", [3], TestFiles.Bytes(new ushort[] { 0x3F80, 0x4000, 0x4040 })),
    ];

    private static LlmBuildException Open(string dir) => Assert.ThrowsExactly<LlmBuildException>(() => CheckpointLoader.Open(dir));

    private static string Write(Func<string, string>? patch = null)
    {
        string dir = TestFiles.TempDir();
        TestFiles.WriteSafetensors(Path.Combine(dir, "model.safetensors"), Two(), patch);
        return dir;
    }

    [TestMethod]
    public void TruncatedDataNamesFileAndTensor()
    {
        string dir = Write();
        string path = Path.Combine(dir, "model.safetensors");
        byte[] all = File.ReadAllBytes(path);
        File.WriteAllBytes(path, all[..^2]);
        var e = Open(dir);
        Assert.AreEqual(ErrorCodes.BadTensorOffsets, e.Code);
        StringAssert.Contains(e.Message, "'b'");
        StringAssert.Contains(e.Message, path);
    }

    [TestMethod]
    public void HeaderLengthPastEndOfFile()
    {
        string dir = Write();
        string path = Path.Combine(dir, "model.safetensors");
        byte[] all = File.ReadAllBytes(path);
        BinaryPrimitives.WriteUInt64LittleEndian(all, (ulong)all.Length);
        File.WriteAllBytes(path, all);
        Assert.AreEqual(ErrorCodes.BadSafetensors, Open(dir).Code);
        File.WriteAllBytes(path, all[..5]);
        Assert.AreEqual(ErrorCodes.BadSafetensors, Open(dir).Code);
        BinaryPrimitives.WriteUInt64LittleEndian(all, ulong.MaxValue);
        File.WriteAllBytes(path, all);
        Assert.AreEqual(ErrorCodes.BadSafetensors, Open(dir).Code);
    }

    [TestMethod]
    public void OverlappingOffsets()
    {
        // b's range [16, 22) is moved to [14, 20), overlapping a's [0, 16).
        var e = Open(Write(h => h.Replace("[16,22]", "[14,20]")));
        Assert.AreEqual(ErrorCodes.BadTensorOffsets, e.Code);
        StringAssert.Contains(e.Message, "overlap");
    }

    [TestMethod]
    public void LengthDisagreeingWithShapeTimesDtype()
    {
        var e = Open(Write(h => h.Replace("\"shape\":[3]", "\"shape\":[4]")));
        Assert.AreEqual(ErrorCodes.BadTensorOffsets, e.Code);
        StringAssert.Contains(e.Message, "'b'");
    }

    [TestMethod]
    public void WrongDtype()
    {
        var e = Open(Write(h => h.Replace("\"BF16\"", "\"Q4_K\"")));
        Assert.AreEqual(ErrorCodes.UnsupportedTensorDType, e.Code);
        StringAssert.Contains(e.Message, "Q4_K");
        StringAssert.Contains(e.Message, "'b'");
    }

    [TestMethod]
    public void BadJsonAndBadFields()
    {
        Assert.AreEqual(ErrorCodes.BadSafetensors, Open(Write(h => "{\"a\": ")).Code);
        Assert.AreEqual(ErrorCodes.BadSafetensors, Open(Write(h => h.Replace("\"shape\":[3]", "\"shape\":[-3]"))).Code);
        Assert.AreEqual(ErrorCodes.BadSafetensors, Open(Write(h => h.Replace("\"data_offsets\":[16,22]", "\"data_offsets\":[16]"))).Code);
        Assert.AreEqual(ErrorCodes.BadTensorOffsets, Open(Write(h => h.Replace("[16,22]", "[22,16]"))).Code);
    }

    [TestMethod]
    public void ShardedWithIndexAndItsErrors()
    {
        string dir = TestFiles.TempDir();
        TestFiles.WriteSafetensors(Path.Combine(dir, "model-00001-of-00002.safetensors"), [Two()[0]]);
        TestFiles.WriteSafetensors(Path.Combine(dir, "model-00002-of-00002.safetensors"), [Two()[1]]);
        string index = Path.Combine(dir, "model.safetensors.index.json");
        File.WriteAllText(index, """{"metadata": {"total_size": 22}, "weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}""");
        using (var c = CheckpointLoader.Open(dir))
        {
            CollectionAssert.AreEqual(new[] { "a", "b" }, c.TensorNames.ToArray());
            CollectionAssert.AreEqual(new[] { "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors" }, c.Files.ToArray());
            float[] b = new float[3];
            c.ReadFloat32("b", b);
            CollectionAssert.AreEqual(new[] { 1f, 2f, 3f }, b);
            StringAssert.EndsWith(c.GetInfo("b").File, "model-00002-of-00002.safetensors");
        }
        File.WriteAllText(index, """{"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00001-of-00002.safetensors"}}""");
        var e = Open(dir);
        Assert.AreEqual(ErrorCodes.BadCheckpointIndex, e.Code);
        StringAssert.Contains(e.Message, "'b'");
        File.WriteAllText(index, """{"weight_map": {"a": "model-00003-of-00002.safetensors"}}""");
        e = Open(dir);
        Assert.AreEqual(ErrorCodes.BadCheckpointIndex, e.Code);
        StringAssert.Contains(e.Message, "model-00003-of-00002.safetensors");
        File.WriteAllText(index, """{"weight_map": {"a": "../../etc/passwd"}}""");
        Assert.AreEqual(ErrorCodes.BadCheckpointIndex, Open(dir).Code);
        File.WriteAllText(index, "not json");
        Assert.AreEqual(ErrorCodes.BadCheckpointIndex, Open(dir).Code);
    }
}
