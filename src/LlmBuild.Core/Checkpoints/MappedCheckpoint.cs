using System.Runtime.InteropServices;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Numerics;

namespace LlmBuild.Core.Checkpoints;

/// <summary>Where a tensor's contiguous little-endian bytes live: a file and a byte offset in it.</summary>
internal sealed record TensorLocation(TensorInfo Info, MappedFile File, long Offset);

/// <summary>
/// The reading half shared by every checkpoint format: once a reader has located each tensor's bytes inside its
/// memory-mapped files, reads and dtype conversion are the same for safetensors and pytorch archives.
/// </summary>
internal sealed class MappedCheckpoint : ICheckpoint
{
    private readonly Dictionary<string, TensorLocation> _tensors;
    private readonly IReadOnlyList<MappedFile> _files;

    public MappedCheckpoint(string directory, IReadOnlyList<MappedFile> files, IEnumerable<TensorLocation> tensors)
    {
        Directory = directory;
        _files = files;
        _tensors = new Dictionary<string, TensorLocation>(StringComparer.Ordinal);
        foreach (var t in tensors)
            if (!_tensors.TryAdd(t.Info.Name, t))
                throw new LlmBuildException(ErrorCodes.BadCheckpointIndex,
                    $"Tensor '{t.Info.Name}' appears in both '{_tensors[t.Info.Name].Info.File}' and '{t.Info.File}'. Remove the stray shard.", t.Info.File);
        TensorNames = _tensors.Keys.Order(StringComparer.Ordinal).ToArray();
        Files = files.Select(f => System.IO.Path.GetRelativePath(directory, f.Path)).Order(StringComparer.Ordinal).ToArray();
    }

    /// <summary>
    /// Maps each file and lists its tensors with <paramref name="readTensors"/> (a safetensors header, a torch
    /// archive); every mapping is released if any file fails.
    /// </summary>
    public static MappedCheckpoint OpenFiles(string directory, IReadOnlyList<string> paths, Func<MappedFile, IEnumerable<TensorLocation>> readTensors)
    {
        var files = new List<MappedFile>();
        try
        {
            var tensors = new List<TensorLocation>();
            foreach (string p in paths)
            {
                var file = new MappedFile(System.IO.Path.GetFullPath(p));
                files.Add(file);
                tensors.AddRange(readTensors(file));
            }
            return new MappedCheckpoint(System.IO.Path.GetFullPath(directory), files, tensors);
        }
        catch
        {
            foreach (var f in files) f.Dispose();
            throw;
        }
    }

    public string Directory { get; }
    public IReadOnlyList<string> TensorNames { get; }
    public IReadOnlyList<string> Files { get; }

    public bool Contains(string name) => _tensors.ContainsKey(name);

    public TensorInfo GetInfo(string name) => Locate(name).Info;

    private TensorLocation Locate(string name) =>
        _tensors.TryGetValue(name, out var t) ? t
            : throw new LlmBuildException(ErrorCodes.TensorNotFound,
                $"The checkpoint in '{Directory}' has no tensor '{name}' (it has {_tensors.Count} tensors in {string.Join(", ", Files)}).", Directory);

    public void ReadRaw(string name, long byteOffset, Span<byte> destination)
    {
        var t = Locate(name);
        CheckRange(t.Info, byteOffset, destination.Length, t.Info.ByteLength, "bytes");
        t.File.Read(t.Offset + byteOffset, destination);
    }

    public void ReadFloat32(string name, long elementOffset, Span<float> destination)
    {
        var t = Locate(name);
        DTypes.RequireFloat(t.Info);
        CheckRange(t.Info, elementOffset, destination.Length, t.Info.ElementCount, "elements");
        int size = DTypes.Size(t.Info.DType);
        // Map in bounded chunks so even a > 2 GiB tensor converts without one giant span.
        const int ChunkElements = 1 << 22;
        for (int done = 0; done < destination.Length; done += ChunkElements)
        {
            int n = Math.Min(ChunkElements, destination.Length - done);
            using var view = t.File.Map(t.Offset + (elementOffset + done) * size, (long)n * size);
            ConvertToFloat32(t.Info.DType, view.Span, destination.Slice(done, n));
        }
    }

    internal static void ConvertToFloat32(TensorDType dtype, ReadOnlySpan<byte> source, Span<float> destination)
    {
        switch (dtype)
        {
            case TensorDType.F32: MemoryMarshal.Cast<byte, float>(source).CopyTo(destination); break;
            case TensorDType.BF16: FloatFormats.BFloat16ToFloat(MemoryMarshal.Cast<byte, ushort>(source), destination); break;
            case TensorDType.F16: FloatFormats.HalfToFloat(MemoryMarshal.Cast<byte, ushort>(source), destination); break;
            case TensorDType.F8E4M3: FloatFormats.Float8E4M3ToFloat(source, destination); break;
            case TensorDType.F64:
                var d = MemoryMarshal.Cast<byte, double>(source);
                for (int i = 0; i < d.Length; i++) destination[i] = (float)d[i];
                break;
            default: throw new InvalidOperationException($"{dtype} is not a float dtype.");
        }
    }

    private static void CheckRange(TensorInfo info, long start, int count, long total, string unit)
    {
        if (start < 0 || start + count > total)
            throw new ArgumentOutOfRangeException(nameof(start),
                $"Read of {count} {unit} at {start} is outside tensor '{info.Name}' ({total} {unit}).");
    }

    public void Dispose()
    {
        foreach (var f in _files) f.Dispose();
    }
}
