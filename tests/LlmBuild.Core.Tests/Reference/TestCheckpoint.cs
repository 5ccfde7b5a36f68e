using System.Buffers.Binary;
using System.Text.Json.Nodes;
using LlmBuild.Core.Checkpoints;

namespace LlmBuild.Core.Tests.Reference;

/// <summary>
/// Stopgap single-file safetensors reader (BF16/F16/F32) for the reference and interpreter tests, until the
/// checkpoint reader (Checkpoints/CheckpointLoader) is merged; then these tests should use that instead.
/// </summary>
internal sealed class TestCheckpoint : ICheckpoint
{
    private readonly byte[] _file;
    private readonly long _dataStart;
    private readonly Dictionary<string, (TensorInfo Info, long Begin, long End)> _tensors = new(StringComparer.Ordinal);

    private TestCheckpoint(string path)
    {
        _file = File.ReadAllBytes(path);
        long headerLength = (long)BinaryPrimitives.ReadUInt64LittleEndian(_file);
        _dataStart = 8 + headerLength;
        var header = (JsonObject)JsonNode.Parse(_file.AsSpan(8, (int)headerLength))!;
        foreach (var (name, node) in header)
        {
            if (name == "__metadata__") continue;
            var dtype = (string)node!["dtype"]! switch
            {
                "BF16" => TensorDType.BF16,
                "F16" => TensorDType.F16,
                "F32" => TensorDType.F32,
                string other => throw new NotSupportedException(other),
            };
            long[] shape = ((JsonArray)node["shape"]!).Select(s => (long)s!).ToArray();
            var offsets = (JsonArray)node["data_offsets"]!;
            _tensors[name] = (new TensorInfo(name, dtype, shape, Path.GetFileName(path)), (long)offsets[0]!, (long)offsets[1]!);
        }
        TensorNames = _tensors.Keys.Order(StringComparer.Ordinal).ToList();
    }

    public static TestCheckpoint Open(string dir) => new(Path.Combine(dir, "model.safetensors"));

    public IReadOnlyList<string> TensorNames { get; }
    public IReadOnlyList<string> Files => ["model.safetensors"];
    public bool Contains(string name) => _tensors.ContainsKey(name);
    public TensorInfo GetInfo(string name) => _tensors[name].Info;

    public void ReadFloat32(string name, Span<float> destination)
    {
        var (info, begin, _) = _tensors[name];
        var bytes = _file.AsSpan((int)(_dataStart + begin));
        for (int i = 0; i < info.ElementCount; i++)
            destination[i] = info.DType switch
            {
                TensorDType.BF16 => BitConverter.Int32BitsToSingle(BinaryPrimitives.ReadUInt16LittleEndian(bytes[(2 * i)..]) << 16),
                TensorDType.F16 => (float)BinaryPrimitives.ReadHalfLittleEndian(bytes[(2 * i)..]),
                _ => BinaryPrimitives.ReadSingleLittleEndian(bytes[(4 * i)..]),
            };
    }

    public void ReadRaw(string name, Span<byte> destination)
    {
        var (_, begin, end) = _tensors[name];
        _file.AsSpan((int)(_dataStart + begin), (int)(end - begin)).CopyTo(destination);
    }

    public void Dispose() { }
}
