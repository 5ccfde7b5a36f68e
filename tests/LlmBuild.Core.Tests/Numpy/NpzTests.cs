using System.Runtime.InteropServices;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.IO;
using LlmBuild.Core.Numpy;
using LlmBuild.Core.Tests.Checkpoints;

namespace LlmBuild.Core.Tests.Numpy;

[TestClass]
public sealed class NpzTests
{
    private static string WriteSample(string dir, string name = "a.npz", bool forceZip64 = false)
    {
        string path = Path.Combine(dir, name);
        using var s = File.Create(path);
        using var w = new NpzWriter(s) { ForceZip64 = forceZip64 };
        w.AddFloat32("f32", [1f, -2.5f, 3.25f, 0f, 1e-7f, -0f], [2, 3]);
        w.AddHalf("f16", [0x3C00, 0xC000, 0x7BFF], [3]);
        w.AddBFloat16("model.layers.0.w", [0x3F80, 0xC040], [1, 2]);
        w.AddUInt8("u8", [0, 7, 255, 16], [2, 2]);
        w.AddInt8("i8", [-128, -1, 0, 127], [4]);
        w.AddInt32("i32", [int.MinValue, -1, 0, int.MaxValue], [2, 1, 2]);
        w.AddFloat32("scalar", [42f], []);
        w.AddStreamed("streamed", NpyFormat.Float32, [1000], sink =>
        {
            float[] v = Enumerable.Range(0, 1000).Select(i => i * 0.5f).ToArray();
            sink.Write(MemoryMarshal.AsBytes(v.AsSpan(0, 400)));
            sink.Write(MemoryMarshal.AsBytes(v.AsSpan(400)));
        });
        w.Finish();
        return path;
    }

    private static void AddTail(NpzWriter w, int seqLength)
    {
        w.AddFloat32("cos", Enumerable.Range(0, seqLength).Select(i => MathF.Cos(i)).ToArray(), [seqLength]);
        w.AddUInt8("mask", Enumerable.Range(0, seqLength).Select(i => (byte)i).ToArray(), [seqLength]);
    }

    [TestMethod]
    public void ResumedFileEqualsAFileWrittenWholeAndKeepsTheEntriesBytesInPlace()
    {
        string dir = TestFiles.TempDir();
        using var sample = new NpzReader(WriteSample(dir, "sample.npz"));
        // The weights (the sample's entries) then constants sized by SeqLength, written whole.
        string whole(int seq, string name)
        {
            string p = Path.Combine(dir, name);
            using var f = File.Create(p);
            using var w = new NpzWriter(f);
            foreach (var e in sample.Entries) w.CopyEntry(sample, e.Key);
            AddTail(w, seq);
            w.Finish();
            return p;
        }
        string at8 = whole(8, "at8.npz"), at5 = whole(5, "at5.npz");
        string resumed = Path.Combine(dir, "resumed.npz");
        File.Copy(at8, resumed);
        byte[] before = File.ReadAllBytes(resumed);
        var point = NpzWriter.FindResumePoint(resumed, 8);
        Assert.IsNotNull(point);
        Assert.AreEqual(8, point.Count);
        AtomicFile.Rewrite(resumed, stream =>
        {
            using var w = new NpzWriter(stream, point);
            AddTail(w, 5);
            w.Finish();
        });
        CollectionAssert.AreEqual(File.ReadAllBytes(at5), File.ReadAllBytes(resumed), "same bytes as the file written whole");
        CollectionAssert.AreEqual(before[..(int)point.End], File.ReadAllBytes(resumed)[..(int)point.End], "kept entries untouched");
        Assert.AreEqual(0, Directory.GetFiles(dir, ".*.tmp").Length, "no temporary left");
        using var check = new NpzReader(resumed);
        CollectionAssert.AreEqual(Enumerable.Range(0, 5).Select(i => MathF.Cos(i)).ToArray(), check.ReadFloat32("cos"));
    }

    [TestMethod]
    public void AFileNotLaidOutByTheWriterHasNoResumePoint()
    {
        string dir = TestFiles.TempDir();
        Assert.IsNull(NpzWriter.FindResumePoint(WriteSample(dir, "z.npz", forceZip64: true), 3), "zip64 extras where sizes are small");
        Assert.IsNull(NpzWriter.FindResumePoint(WriteSample(dir), 9), "more entries than the file has");
        Assert.AreEqual(0L, NpzWriter.FindResumePoint(WriteSample(dir), 0)!.End);
    }

    [TestMethod]
    public void AFailedRewriteLeavesNoFileAtThePathAndNoTemporary()
    {
        string dir = TestFiles.TempDir();
        string path = WriteSample(dir);
        Assert.ThrowsExactly<InvalidOperationException>(() => AtomicFile.Rewrite(path, _ => throw new InvalidOperationException("boom")));
        Assert.IsFalse(File.Exists(path), "half-changed file never at the path: the stage writes it whole next time");
        Assert.AreEqual(0, Directory.GetFiles(dir).Length, "no temporary left");
    }

    [TestMethod]
    public void RoundTripsThroughOurReader()
    {
        string path = WriteSample(TestFiles.TempDir());
        using var r = new NpzReader(path);
        CollectionAssert.AreEqual(new[] { "f32", "f16", "model.layers.0.w", "u8", "i8", "i32", "scalar", "streamed" }, r.Keys.ToArray());
        CollectionAssert.AreEqual(new float[] { 1f, -2.5f, 3.25f, 0f, 1e-7f, -0f }, r.ReadFloat32("f32"));
        CollectionAssert.AreEqual(new float[] { 1f, -2f, 65504f }, r.ReadFloat32("f16"));
        CollectionAssert.AreEqual(new float[] { 1f, -3f }, r.ReadFloat32("model.layers.0.w"));
        CollectionAssert.AreEqual(new long[] { 2, 1, 2 }, r.GetEntry("i32").Shape);
        Assert.AreEqual("<i4", r.GetEntry("i32").Descr);
        CollectionAssert.AreEqual(new byte[] { 0, 7, 255, 16 }, r.ReadBytes("u8"));
        Assert.AreEqual(0, r.GetEntry("scalar").Shape.Length);
        Assert.AreEqual(499.5f, r.ReadFloat32("streamed")[999]);
        var e = Assert.ThrowsExactly<LlmBuildException>(() => r.GetEntry("missing"));
        Assert.AreEqual(ErrorCodes.NpzKeyNotFound, e.Code);
    }

    [TestMethod]
    public void OutputIsDeterministic()
    {
        string dir = TestFiles.TempDir();
        string a = WriteSample(dir, "a.npz"), b = WriteSample(dir, "b.npz");
        CollectionAssert.AreEqual(File.ReadAllBytes(a), File.ReadAllBytes(b));
    }

    [TestMethod]
    public void RawCopyPreservesBytesAndRenames()
    {
        string dir = TestFiles.TempDir();
        string src = WriteSample(dir);
        string dst = Path.Combine(dir, "copy.npz");
        using (var r = new NpzReader(src))
        using (var s = File.Create(dst))
        using (var w = new NpzWriter(s))
        {
            w.CopyEntry(r, "streamed");
            w.CopyEntry(r, "f16", "renamed");
        }
        using var c = new NpzReader(dst);
        CollectionAssert.AreEqual(new[] { "streamed", "renamed" }, c.Keys.ToArray());
        CollectionAssert.AreEqual(new float[] { 1f, -2f, 65504f }, c.ReadFloat32("renamed"));
    }

    [TestMethod]
    [DataRow(false)]
    [DataRow(true)]
    public void NumpyReadsWhatWeWrite(bool forceZip64)
    {
        string path = WriteSample(TestFiles.TempDir(), forceZip64: forceZip64);
        string output = TestFiles.RunPython($$"""
            import numpy as np, zipfile
            z = np.load('{{path}}')
            assert zipfile.ZipFile('{{path}}').testzip() is None  # every CRC checks out
            print(list(z.keys()))
            print(z['f32'].dtype, z['f32'].shape, z['f32'].ravel().tolist())
            print(z['f16'].dtype, z['f16'].tolist())
            print(z['model.layers.0.w'].dtype, z['model.layers.0.w'].tolist())
            print(z['u8'].dtype, z['u8'].tolist(), z['i8'].dtype, z['i8'].tolist())
            print(z['i32'].dtype, z['i32'].shape, z['i32'].ravel().tolist())
            print(z['scalar'].shape, float(z['scalar']), float(z['streamed'].sum()))
            """);
        string[] lines = output.Split('\n');
        Assert.AreEqual("['f32', 'f16', 'model.layers.0.w', 'u8', 'i8', 'i32', 'scalar', 'streamed']", lines[0]);
        Assert.AreEqual("float32 (2, 3) [1.0, -2.5, 3.25, 0.0, 1.0000000116860974e-07, -0.0]", lines[1]);
        Assert.AreEqual("float16 [1.0, -2.0, 65504.0]", lines[2]);
        Assert.AreEqual("uint16 [[16256, 49216]]", lines[3]);
        Assert.AreEqual("uint8 [[0, 7], [255, 16]] int8 [-128, -1, 0, 127]", lines[4]);
        Assert.AreEqual("int32 (2, 1, 2) [-2147483648, -1, 0, 2147483647]", lines[5]);
        Assert.AreEqual("() 42.0 249750.0", lines[6]);
    }

    [TestMethod]
    public void ReadsWhatNumpyWritesIncludingCompressed()
    {
        string dir = TestFiles.TempDir();
        TestFiles.RunPython($$"""
            import numpy as np
            a = np.arange(12, dtype=np.float32).reshape(3, 4) / 4
            np.savez('{{dir}}/plain.npz', a=a, b=np.array([1, 2, 3], dtype=np.int32), h=np.array([0.5, -1], dtype=np.float16))
            np.savez_compressed('{{dir}}/packed.npz', a=a)
            np.save('{{dir}}/one.npy', a)
            """);
        foreach (string name in new[] { "plain.npz", "packed.npz" })
        {
            using var r = new NpzReader(Path.Combine(dir, name));
            CollectionAssert.AreEqual(Enumerable.Range(0, 12).Select(i => i / 4f).ToArray(), r.ReadFloat32("a"), name);
            CollectionAssert.AreEqual(new long[] { 3, 4 }, r.GetEntry("a").Shape);
        }
        using (var r = new NpzReader(Path.Combine(dir, "plain.npz")))
        {
            CollectionAssert.AreEqual(new float[] { 0.5f, -1f }, r.ReadFloat32("h"));
            CollectionAssert.AreEqual(new byte[] { 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0 }, r.ReadBytes("b"));
        }
        var (shape, data) = NpyFile.ReadFloat32(Path.Combine(dir, "one.npy"));
        CollectionAssert.AreEqual(new long[] { 3, 4 }, shape);
        Assert.AreEqual(2.75f, data[11]);
    }

    [TestMethod]
    public void NpyFileRoundTripsAndNumpyReadsIt()
    {
        string dir = TestFiles.TempDir();
        string path = Path.Combine(dir, "logits.npy");
        NpyFile.WriteFloat32(path, [0.25f, -1f, 3f, 4f, 5f, 6f], [1, 2, 3]);
        var (shape, data) = NpyFile.ReadFloat32(path);
        CollectionAssert.AreEqual(new long[] { 1, 2, 3 }, shape);
        CollectionAssert.AreEqual(new[] { 0.25f, -1f, 3f, 4f, 5f, 6f }, data);
        Assert.AreEqual(0, (File.ReadAllBytes(path).Length - 24) % 64, "the header pads the data start to 64 bytes");
        string output = TestFiles.RunPython($"import numpy as np; a = np.load('{path}'); print(a.dtype, a.shape, a.ravel().tolist())");
        Assert.AreEqual("float32 (1, 2, 3) [0.25, -1.0, 3.0, 4.0, 5.0, 6.0]", output.Trim());
    }

    [TestMethod]
    public void Crc32MatchesTheBitwiseReferenceAndTheKnownCheckValue()
    {
        Assert.AreEqual(0xCBF43926u, Crc32.Compute("123456789"u8));
        var data = new byte[10_007];
        new Random(3).NextBytes(data);
        Assert.AreEqual(Crc32.ComputeReference(data), Crc32.Compute(data));
        Assert.AreEqual(Crc32.ComputeReference(data), Crc32.Append(Crc32.Compute(data.AsSpan(0, 333)), data.AsSpan(333)));
        // Every length around the folding thresholds (64-byte blocks, 16-byte tail, table remainder).
        for (int n = 0; n < 600; n++)
            Assert.AreEqual(Crc32.ComputeReference(data.AsSpan(7, n)), Crc32.Compute(data.AsSpan(7, n)), $"length {n}");
    }

    [TestMethod]
    public void TruncatedOrCorruptNpzIsACodedError()
    {
        string dir = TestFiles.TempDir();
        byte[] good = File.ReadAllBytes(WriteSample(dir));
        string cut = Path.Combine(dir, "cut.npz");
        File.WriteAllBytes(cut, good[..(good.Length / 2)]);
        Assert.AreEqual(ErrorCodes.BadNumpyFile, Assert.ThrowsExactly<LlmBuildException>(() => new NpzReader(cut)).Code);
        string tiny = Path.Combine(dir, "tiny.npz");
        File.WriteAllBytes(tiny, [1, 2, 3]);
        Assert.AreEqual(ErrorCodes.BadNumpyFile, Assert.ThrowsExactly<LlmBuildException>(() => new NpzReader(tiny)).Code);
        // A central directory pointing past the end of the file.
        byte[] bad = (byte[])good.Clone();
        int eocd = bad.Length - 22;
        System.Buffers.Binary.BinaryPrimitives.WriteUInt32LittleEndian(bad.AsSpan(eocd + 16), (uint)bad.Length + 100);
        string badPath = Path.Combine(dir, "bad.npz");
        File.WriteAllBytes(badPath, bad);
        Assert.AreEqual(ErrorCodes.BadNumpyFile, Assert.ThrowsExactly<LlmBuildException>(() => new NpzReader(badPath)).Code);
        using var r = new NpzReader(WriteSample(dir, "ok.npz"));
        Assert.AreEqual(ErrorCodes.BadNumpyFile, Assert.ThrowsExactly<LlmBuildException>(() => r.ReadBytes("u8", 2, new byte[3])).Code);
    }

    [TestMethod]
    [DataRow(118, 1)]
    [DataRow(245, 1)]
    [DataRow(246, 1)]
    [DataRow(4000, 1)]
    [DataRow(300, 2)]
    public void HeadersOfAnyLengthAreRead(int dictLength, int major)
    {
        // The reader takes the first 256 bytes of each entry for its header and reads more only for a longer one: a
        // header that ends just inside, just past, or far past those bytes reads the same (v1: 10-byte prelude, v2: 12).
        string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }";
        dict = dict.PadRight(dictLength - 1) + "\n";
        byte[] data = MemoryMarshal.AsBytes(new float[] { 1.5f, -2f, 3f }.AsSpan()).ToArray();
        var npy = new List<byte>();
        npy.AddRange([0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y', (byte)major, 0]);
        if (major == 1) npy.AddRange(BitConverter.GetBytes((ushort)dict.Length));
        else npy.AddRange(BitConverter.GetBytes((uint)dict.Length));
        npy.AddRange(System.Text.Encoding.Latin1.GetBytes(dict));
        npy.AddRange(data);
        string path = Path.Combine(TestFiles.TempDir(), "long.npz");
        using (var zip = new System.IO.Compression.ZipArchive(File.Create(path), System.IO.Compression.ZipArchiveMode.Create))
        {
            using var entry = zip.CreateEntry("w.npy", System.IO.Compression.CompressionLevel.NoCompression).Open();
            entry.Write(npy.ToArray());
        }
        using var reader = new NpzReader(path);
        Assert.IsTrue(reader.GetEntry("w").Stored, "a stored entry (its header is read in place)");
        CollectionAssert.AreEqual(new[] { 1.5f, -2f, 3f }, reader.ReadFloat32("w"));
        CollectionAssert.AreEqual(new long[] { 3 }, reader.GetEntry("w").Shape);
    }
}
