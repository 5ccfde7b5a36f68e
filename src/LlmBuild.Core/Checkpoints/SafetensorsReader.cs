using System.Text.Json;
using LlmBuild.Core.Diagnostics;

namespace LlmBuild.Core.Checkpoints;

/// <summary>
/// Reads the safetensors format: an 8-byte little-endian header length, a JSON header mapping each tensor to
/// its dtype, shape and [begin, end) data offsets, then the data. Only the header is read on open; tensors are
/// mapped lazily. Every offset is validated up front (inside the file, not overlapping, shape × dtype long).
/// </summary>
public static class SafetensorsReader
{
    /// <summary>The largest header accepted (the reference implementation's limit).</summary>
    public const long MaxHeaderBytes = 100_000_000;

    /// <summary>Opens one .safetensors file as a checkpoint.</summary>
    public static ICheckpoint OpenFile(string path)
    {
        var file = new MappedFile(Path.GetFullPath(path));
        try
        {
            return new MappedCheckpoint(Path.GetDirectoryName(file.Path)!, [file], ReadHeader(file));
        }
        catch
        {
            file.Dispose();
            throw;
        }
    }

    /// <summary>Opens several .safetensors files (shards without an index) as one checkpoint; a tensor may appear only once.</summary>
    public static ICheckpoint OpenFiles(string directory, IReadOnlyList<string> paths) =>
        MappedCheckpoint.OpenFiles(directory, paths, ReadHeader);

    /// <summary>Opens a sharded checkpoint from its <c>model.safetensors.index.json</c>.</summary>
    public static ICheckpoint OpenIndex(string indexPath)
    {
        string dir = Path.GetDirectoryName(Path.GetFullPath(indexPath))!;
        var weightMap = CheckpointIndex.ReadWeightMap(indexPath);
        var files = new List<MappedFile>();
        try
        {
            var tensors = new List<TensorLocation>();
            foreach (var shard in weightMap.GroupBy(p => p.Value, StringComparer.Ordinal).OrderBy(g => g.Key, StringComparer.Ordinal))
            {
                string shardPath = CheckpointIndex.ShardPath(indexPath, dir, shard.Key);
                var file = new MappedFile(shardPath);
                files.Add(file);
                var inFile = ReadHeader(file).ToDictionary(t => t.Info.Name, StringComparer.Ordinal);
                foreach (var (name, _) in shard.OrderBy(p => p.Key, StringComparer.Ordinal))
                {
                    if (!inFile.TryGetValue(name, out var location))
                        throw new LlmBuildException(ErrorCodes.BadCheckpointIndex,
                            $"'{indexPath}' places tensor '{name}' in '{shard.Key}', but that shard has no such tensor. The index and shards are from different downloads; download the checkpoint again.", indexPath);
                    tensors.Add(location);
                }
            }
            return new MappedCheckpoint(dir, files, tensors);
        }
        catch
        {
            foreach (var f in files) f.Dispose();
            throw;
        }
    }

    internal static List<TensorLocation> ReadHeader(MappedFile file)
    {
        string path = file.Path;
        if (file.Length < 8)
            throw Bad(path, $"the file is {file.Length} bytes long, too short for the 8-byte header length. It is truncated; download it again.");
        Span<byte> lengthBytes = stackalloc byte[8];
        file.Read(0, lengthBytes);
        ulong headerLength = System.Buffers.Binary.BinaryPrimitives.ReadUInt64LittleEndian(lengthBytes);
        if (headerLength > (ulong)(file.Length - 8))
            throw Bad(path, $"the header length {headerLength} runs past the end of the file ({file.Length} bytes). The file is truncated or not safetensors.");
        if (headerLength > MaxHeaderBytes)
            throw Bad(path, $"the header length {headerLength} exceeds the {MaxHeaderBytes}-byte limit.");
        if (headerLength < 2)
            throw Bad(path, $"the header length {headerLength} is too small for a JSON object.");

        byte[] header = new byte[headerLength];
        file.Read(8, header);
        long dataStart = 8 + (long)headerLength;
        long dataLength = file.Length - dataStart;

        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(header);
        }
        catch (JsonException e)
        {
            throw Bad(path, $"the header is not valid JSON ({e.Message}).");
        }
        using var _ = doc;
        if (doc.RootElement.ValueKind != JsonValueKind.Object) throw Bad(path, "the header is not a JSON object.");

        var tensors = new List<TensorLocation>();
        var ranges = new List<(long Begin, long End, string Name)>();
        foreach (var property in doc.RootElement.EnumerateObject())
        {
            string name = property.Name;
            if (name == "__metadata__") continue;
            var e = property.Value;
            if (e.ValueKind != JsonValueKind.Object) throw Bad(path, $"the entry of tensor '{name}' is not an object.");
            if (!e.TryGetProperty("dtype", out var dtypeElement) || dtypeElement.ValueKind != JsonValueKind.String)
                throw Bad(path, $"tensor '{name}' has no \"dtype\" string.");
            string dtypeName = dtypeElement.GetString()!;
            TensorDType dtype = DTypes.FromSafetensors(dtypeName)
                ?? throw new LlmBuildException(ErrorCodes.UnsupportedTensorDType,
                    $"Tensor '{name}' in '{path}' has dtype '{dtypeName}', which LlmBuild cannot read (supported: F32, F16, BF16, F64, I64, I32, I16, I8, U8, BOOL, F8_E4M3).", path);
            long[] shape = ReadLongs(e, "shape", name, path);
            long[] offsets = ReadLongs(e, "data_offsets", name, path);
            if (offsets.Length != 2) throw Bad(path, $"tensor '{name}' has {offsets.Length} data_offsets; expected [begin, end].");
            long begin = offsets[0], end = offsets[1];
            long expected;
            try
            {
                long elements = 1;
                foreach (long d in shape) elements = checked(elements * d);
                expected = checked(elements * DTypes.Size(dtype));
            }
            catch (OverflowException)
            {
                // No file can hold it, so the shape field is damaged (a real tensor's bytes fit in a long).
                throw Offsets(path, $"tensor '{name}' has shape [{string.Join(", ", shape)}], whose {dtypeName} bytes exceed 2^63; the header is corrupt. Download the file again.");
            }
            if (end < begin)
                throw Offsets(path, $"tensor '{name}' has data_offsets [{begin}, {end}] with end before begin.");
            if (end > dataLength)
                throw Offsets(path, $"tensor '{name}' ends at data offset {end}, past the end of the data ({dataLength} bytes). The file is truncated; download it again.");
            if (end - begin != expected)
                throw Offsets(path, $"tensor '{name}' ({dtypeName} [{string.Join(", ", shape)}]) needs {expected} bytes but its data_offsets [{begin}, {end}] span {end - begin}.");
            ranges.Add((begin, end, name));
            tensors.Add(new TensorLocation(new TensorInfo(name, dtype, shape, path), file, dataStart + begin));
        }
        ranges.Sort((a, b) => a.Begin != b.Begin ? a.Begin.CompareTo(b.Begin) : a.End.CompareTo(b.End));
        for (int i = 1; i < ranges.Count; i++)
            if (ranges[i].Begin < ranges[i - 1].End)
                throw Offsets(path, $"tensors '{ranges[i - 1].Name}' [{ranges[i - 1].Begin}, {ranges[i - 1].End}) and '{ranges[i].Name}' [{ranges[i].Begin}, {ranges[i].End}) overlap.");
        return tensors;
    }

    private static long[] ReadLongs(JsonElement e, string field, string tensor, string path)
    {
        if (!e.TryGetProperty(field, out var a) || a.ValueKind != JsonValueKind.Array)
            throw Bad(path, $"tensor '{tensor}' has no \"{field}\" array.");
        var result = new long[a.GetArrayLength()];
        int i = 0;
        foreach (var v in a.EnumerateArray())
        {
            if (v.ValueKind != JsonValueKind.Number || !v.TryGetInt64(out long x) || x < 0)
                throw Bad(path, $"tensor '{tensor}' has a \"{field}\" value {v.GetRawText()} that is not a non-negative integer.");
            result[i++] = x;
        }
        return result;
    }

    private static LlmBuildException Bad(string path, string what) =>
        new(ErrorCodes.BadSafetensors, $"'{path}' is not a valid safetensors file: {what}", path);

    private static LlmBuildException Offsets(string path, string what) =>
        new(ErrorCodes.BadTensorOffsets, $"'{path}': {what}", path);
}
