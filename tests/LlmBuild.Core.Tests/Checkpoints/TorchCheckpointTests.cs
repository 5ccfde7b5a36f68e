using System.IO.Compression;
using System.Text;
using LlmBuild.Core.Checkpoints;
using LlmBuild.Core.Diagnostics;

namespace LlmBuild.Core.Tests.Checkpoints;

[TestClass]
public sealed class TorchCheckpointTests
{
    /// <summary>
    /// Python's own pickle module writes the state dict the way torch.save does (protocol 2, persistent ids for
    /// storages, _rebuild_tensor_v2 reductions, an OrderedDict with _metadata), against stand-in torch classes, and
    /// zipfile stores it in torch's archive layout. No torch needed; the pickler is independent of ours.
    /// </summary>
    private static string WriteBin(string dir, string fileName, string extraPython = "", string tensors = "DEFAULT")
    {
        string path = Path.Combine(dir, fileName);
        if (tensors == "DEFAULT")
            tensors = """
                st['model.embed.weight'] = T('FloatStorage', '0', [1.0, -2.0, 3.5, 4.0, 5.0, 6.0], 'f', 0, (2, 3), (3, 1))
                st['model.norm.weight'] = T('BFloat16Storage', '1', [0x3F80, 0xC040, 0x4000], 'H', 1, (2,), (1,))
                st['model.half'] = T('HalfStorage', '2', [0x3C00, 0x4000], 'H', 0, (1, 2), (2, 1))
                st['model.ids'] = T('IntStorage', '3', [7, -8], 'i', 0, (2,), (1,))
                st['model.norm.weight_alias'] = T('BFloat16Storage', '1', [0x3F80, 0xC040, 0x4000], 'H', 0, (1,), (1,))
                """;
        TestFiles.RunPython($$"""
            import pickle, zipfile, collections, struct, sys, types, io
            torch = types.ModuleType('torch'); utils = types.ModuleType('torch._utils')
            sys.modules['torch'] = torch; sys.modules['torch._utils'] = utils; torch._utils = utils
            for n in ['FloatStorage', 'BFloat16Storage', 'HalfStorage', 'IntStorage']:
                c = type(n, (), {}); c.__module__ = 'torch'; setattr(torch, n, c)
            def _rebuild_tensor_v2(*a): pass
            _rebuild_tensor_v2.__module__ = 'torch._utils'; utils._rebuild_tensor_v2 = _rebuild_tensor_v2
            class Storage:
                def __init__(s, kind, key, values, fmt): s.kind, s.key, s.values, s.fmt = kind, key, values, fmt
            class T:
                def __init__(s, kind, key, values, fmt, offset, size, stride):
                    s.storage = storages.setdefault(key, Storage(kind, key, values, fmt)); s.offset, s.size, s.stride = offset, size, stride
                def __reduce__(s):
                    return (_rebuild_tensor_v2, (s.storage, s.offset, s.size, s.stride, False, collections.OrderedDict()))
            class P(pickle.Pickler):
                def persistent_id(self, o):
                    if isinstance(o, Storage): return ('storage', getattr(torch, o.kind), o.key, 'cpu', len(o.values))
                    return None
            storages = {}
            st = collections.OrderedDict()
            {{tensors}}
            st._metadata = collections.OrderedDict([('', {'version': 1})])
            {{extraPython}}
            buf = io.BytesIO(); P(buf, protocol=2).dump(st)
            with zipfile.ZipFile('{{path}}', 'w', zipfile.ZIP_STORED) as z:
                z.writestr('archive/data.pkl', buf.getvalue())
                z.writestr('archive/byteorder', 'little')
                for s in storages.values(): z.writestr('archive/data/' + s.key, struct.pack('<%d%s' % (len(s.values), s.fmt), *s.values))
                z.writestr('archive/version', '3\n')
            """);
        return path;
    }

    [TestMethod]
    public void ReadsAStateDictPickledByPython()
    {
        string dir = TestFiles.TempDir();
        WriteBin(dir, "pytorch_model.bin");
        using var c = CheckpointLoader.Open(dir);
        CollectionAssert.AreEqual(new[] { "pytorch_model.bin" }, c.Files.ToArray());
        CollectionAssert.AreEqual(new[] { "model.embed.weight", "model.half", "model.ids", "model.norm.weight", "model.norm.weight_alias" }, c.TensorNames.ToArray());
        float[] e = new float[6];
        c.ReadFloat32("model.embed.weight", e);
        CollectionAssert.AreEqual(new[] { 1f, -2f, 3.5f, 4f, 5f, 6f }, e);
        CollectionAssert.AreEqual(new long[] { 2, 3 }, c.GetInfo("model.embed.weight").Shape);
        float[] n = new float[2];
        c.ReadFloat32("model.norm.weight", n); // storage offset 1: elements 1..2 of the shared storage
        CollectionAssert.AreEqual(new[] { -3f, 2f }, n);
        float[] alias = new float[1];
        c.ReadFloat32("model.norm.weight_alias", alias);
        Assert.AreEqual(1f, alias[0]);
        float[] h = new float[2];
        c.ReadFloat32("model.half", h);
        CollectionAssert.AreEqual(new[] { 1f, 2f }, h);
        Assert.AreEqual(TensorDType.I32, c.GetInfo("model.ids").DType);
    }

    [TestMethod]
    public void ShardedBinWithIndex()
    {
        string dir = TestFiles.TempDir();
        WriteBin(dir, "pytorch_model-00001-of-00002.bin", tensors: "st['a.weight'] = T('FloatStorage', '0', [1.0, 2.0], 'f', 0, (2,), (1,))");
        WriteBin(dir, "pytorch_model-00002-of-00002.bin", tensors: "st['b.weight'] = T('FloatStorage', '0', [3.0], 'f', 0, (1,), (1,))");
        File.WriteAllText(Path.Combine(dir, "pytorch_model.bin.index.json"),
            """{"metadata": {}, "weight_map": {"a.weight": "pytorch_model-00001-of-00002.bin", "b.weight": "pytorch_model-00002-of-00002.bin"}}""");
        using var c = CheckpointLoader.Open(dir);
        CollectionAssert.AreEqual(new[] { "a.weight", "b.weight" }, c.TensorNames.ToArray());
        Assert.AreEqual(2, c.Files.Count);
        float[] b = new float[1];
        c.ReadFloat32("b.weight", b);
        Assert.AreEqual(3f, b[0]);
    }

    [TestMethod]
    public void NonContiguousTensorIsACodedError()
    {
        string dir = TestFiles.TempDir();
        WriteBin(dir, "pytorch_model.bin", tensors: "st['t'] = T('FloatStorage', '0', [1.0, 2.0, 3.0, 4.0], 'f', 0, (2, 2), (1, 2))");
        var e = Assert.ThrowsExactly<LlmBuildException>(() => CheckpointLoader.Open(dir));
        Assert.AreEqual(ErrorCodes.BadTorchCheckpoint, e.Code);
        StringAssert.Contains(e.Message, "contiguous");
    }

    /// <summary>A pickle whose state dict value is built by os.system: the classic code-execution payload.</summary>
    private static byte[] MaliciousPickle(string module, string name)
    {
        var p = new MemoryStream();
        p.Write([0x80, 0x02]);                                   // PROTO 2
        p.WriteByte(0x7D);                                       // EMPTY_DICT
        p.WriteByte(0x58); WriteLengthPrefixed(p, "x");          // BINUNICODE 'x'
        p.WriteByte(0x63); p.Write(Encoding.ASCII.GetBytes($"{module}\n{name}\n")); // GLOBAL
        p.WriteByte(0x58); WriteLengthPrefixed(p, "touch /tmp/llmbuild-pwned");
        p.WriteByte(0x85);                                       // TUPLE1
        p.WriteByte(0x52);                                       // REDUCE
        p.WriteByte(0x73);                                       // SETITEM
        p.WriteByte(0x2E);                                       // STOP
        return p.ToArray();
    }

    private static void WriteLengthPrefixed(Stream s, string text)
    {
        byte[] b = Encoding.UTF8.GetBytes(text);
        s.Write(BitConverter.GetBytes(b.Length));
        s.Write(b);
    }

    private static string WriteZip(string dir, byte[] pickle, string fileName = "pytorch_model.bin")
    {
        string path = Path.Combine(dir, fileName);
        using var z = ZipFile.Open(path, ZipArchiveMode.Create);
        using (var s = z.CreateEntry("archive/data.pkl", CompressionLevel.NoCompression).Open()) s.Write(pickle);
        using (var s = z.CreateEntry("archive/version", CompressionLevel.NoCompression).Open()) s.Write("3\n"u8);
        return path;
    }

    [TestMethod]
    [DataRow("os", "system")]
    [DataRow("builtins", "eval")]
    [DataRow("subprocess", "Popen")]
    [DataRow("torch", "load")]
    [DataRow("torch._utils", "_rebuild_device_tensor_from_numpy")]
    public void ForbiddenGlobalIsRefusedWithoutExecuting(string module, string name)
    {
        string dir = TestFiles.TempDir();
        WriteZip(dir, MaliciousPickle(module, name));
        var e = Assert.ThrowsExactly<LlmBuildException>(() => CheckpointLoader.Open(dir));
        Assert.AreEqual(ErrorCodes.ForbiddenPickleGlobal, e.Code);
        StringAssert.Contains(e.Message, $"{module}.{name}");
        StringAssert.Contains(e.Message, "pytorch_model.bin");
    }

    [TestMethod]
    public void GarbageAndTruncatedPicklesAreCodedErrors()
    {
        string dir = TestFiles.TempDir();
        byte[] good = MaliciousPickle("collections", "OrderedDict");
        WriteZip(dir, good[..7]);
        Assert.AreEqual(ErrorCodes.BadTorchCheckpoint, Assert.ThrowsExactly<LlmBuildException>(() => CheckpointLoader.Open(dir)).Code);
        string dir2 = TestFiles.TempDir();
        WriteZip(dir2, [0x80, 0x02, 0xFF, 0x2E]);
        Assert.AreEqual(ErrorCodes.BadTorchCheckpoint, Assert.ThrowsExactly<LlmBuildException>(() => CheckpointLoader.Open(dir2)).Code);
        string dir3 = TestFiles.TempDir();
        File.WriteAllBytes(Path.Combine(dir3, "pytorch_model.bin"), [0x80, 0x02, 0x7D, 0x2E]); // legacy, not a zip
        Assert.AreEqual(ErrorCodes.BadTorchCheckpoint, Assert.ThrowsExactly<LlmBuildException>(() => CheckpointLoader.Open(dir3)).Code);
    }

    [TestMethod]
    public void TruncatedBinIsACodedError()
    {
        string dir = TestFiles.TempDir();
        string path = WriteBin(dir, "pytorch_model.bin");
        byte[] all = File.ReadAllBytes(path);
        File.WriteAllBytes(path, all[..(all.Length - 40)]);
        var e = Assert.ThrowsExactly<LlmBuildException>(() => CheckpointLoader.Open(dir));
        Assert.AreEqual(ErrorCodes.BadTorchCheckpoint, e.Code);
    }
}
