using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.IO;

namespace LlmBuild.Core.Checkpoints;

/// <summary>
/// Reads pytorch_model*.bin checkpoints (torch.save's zip format: <c>&lt;archive&gt;/data.pkl</c> plus one stored
/// entry per storage under <c>&lt;archive&gt;/data/</c>). The pickle goes through <see cref="RestrictedUnpickler"/>,
/// so loading never executes code; storages are memory-mapped in place like safetensors data.
/// </summary>
public static class TorchCheckpointReader
{
    /// <summary>Opens a sharded checkpoint from its <c>pytorch_model.bin.index.json</c>.</summary>
    public static ICheckpoint OpenIndex(string indexPath)
    {
        string dir = Path.GetDirectoryName(Path.GetFullPath(indexPath))!;
        var weightMap = CheckpointIndex.ReadWeightMap(indexPath);
        var shards = weightMap.Values.Distinct(StringComparer.Ordinal).Order(StringComparer.Ordinal)
            .Select(s => CheckpointIndex.ShardPath(indexPath, dir, s)).ToArray();
        var checkpoint = (MappedCheckpoint)OpenFiles(dir, shards);
        foreach (var (name, shard) in weightMap)
            if (!checkpoint.Contains(name) || !string.Equals(Path.GetFileName(checkpoint.GetInfo(name).File), shard, StringComparison.Ordinal))
            {
                checkpoint.Dispose();
                throw new LlmBuildException(ErrorCodes.BadCheckpointIndex,
                    $"'{indexPath}' places tensor '{name}' in '{shard}', but that shard has no such tensor. The index and shards are from different downloads.", indexPath);
            }
        return checkpoint;
    }

    /// <summary>Opens one or more .bin files as one checkpoint.</summary>
    public static ICheckpoint OpenFiles(string directory, IReadOnlyList<string> paths) =>
        MappedCheckpoint.OpenFiles(directory, paths, ReadArchive);

    internal static List<TensorLocation> ReadArchive(MappedFile file)
    {
        string path = file.Path;
        byte[] magic = new byte[Math.Min(4, (int)Math.Min(file.Length, 4))];
        file.Read(0, magic);
        if (magic.Length < 4 || magic[0] != 'P' || magic[1] != 'K')
            throw new LlmBuildException(ErrorCodes.BadTorchCheckpoint,
                $"'{path}' is not a zip-format torch checkpoint (legacy torch.save format or not a checkpoint). Re-save it with a recent torch, or convert it to safetensors.", path);
        var entries = ZipDirectory.Read(file.Length, (offset, span) => file.Read(offset, span),
            what => new LlmBuildException(ErrorCodes.BadTorchCheckpoint, $"'{path}' is not a valid zip archive: {what}. The file is truncated or corrupt; download it again.", path));
        var pkl = entries.FirstOrDefault(e => e.Name.EndsWith("/data.pkl", StringComparison.Ordinal) && e.Name.Count(c => c == '/') == 1)
            ?? throw new LlmBuildException(ErrorCodes.BadTorchCheckpoint, $"'{path}' has no <archive>/data.pkl entry; it is not a torch checkpoint.", path);
        string prefix = pkl.Name[..^"data.pkl".Length];
        var byteorder = entries.FirstOrDefault(e => e.Name == prefix + "byteorder");
        if (byteorder is not null && byteorder.Method == 0)
        {
            byte[] order = new byte[byteorder.Size];
            file.Read(byteorder.DataOffset, order);
            if (System.Text.Encoding.ASCII.GetString(order).Trim() != "little")
                throw new LlmBuildException(ErrorCodes.BadTorchCheckpoint, $"'{path}' stores big-endian tensors, which LlmBuild does not read.", path);
        }
        if (pkl.Method != 0 || pkl.Size > int.MaxValue)
            throw new LlmBuildException(ErrorCodes.BadTorchCheckpoint, $"'{path}': data.pkl is compressed or too large.", path);
        byte[] pickle = new byte[pkl.Size];
        file.Read(pkl.DataOffset, pickle);

        var storages = entries.Where(e => e.Name.StartsWith(prefix + "data/", StringComparison.Ordinal))
            .ToDictionary(e => e.Name[(prefix.Length + "data/".Length)..], StringComparer.Ordinal);
        var result = new List<TensorLocation>();
        foreach (var (name, t) in RestrictedUnpickler.LoadStateDict(pickle, path))
        {
            if (!storages.TryGetValue(t.Storage.Key, out var entry))
                throw new LlmBuildException(ErrorCodes.BadTorchCheckpoint, $"'{path}': tensor '{name}' uses storage '{t.Storage.Key}', which the archive lacks.", path);
            if (entry.Method != 0)
                throw new LlmBuildException(ErrorCodes.BadTorchCheckpoint, $"'{path}': storage '{t.Storage.Key}' of tensor '{name}' is compressed; torch stores them uncompressed. Re-save the checkpoint.", path);
            int size = DTypes.Size(t.Storage.DType);
            if (entry.Size < t.Storage.ElementCount * size)
                throw new LlmBuildException(ErrorCodes.BadTensorOffsets,
                    $"'{path}': storage '{t.Storage.Key}' holds {entry.Size} bytes but declares {t.Storage.ElementCount} {t.Storage.DType} elements. The file is truncated.", path);
            if (t.Shape.Length != t.Stride.Length)
                throw new LlmBuildException(ErrorCodes.BadTorchCheckpoint, $"'{path}': tensor '{name}' has {t.Shape.Length} dims but {t.Stride.Length} strides.", path);
            long expected = 1, elements = 1;
            for (int d = t.Shape.Length - 1; d >= 0; d--)
            {
                if (t.Shape[d] > 1 && t.Stride[d] != expected)
                    throw new LlmBuildException(ErrorCodes.BadTorchCheckpoint,
                        $"'{path}': tensor '{name}' is not contiguous (shape [{string.Join(", ", t.Shape)}], stride [{string.Join(", ", t.Stride)}]). Re-save it with tensor.contiguous() or convert to safetensors.", path);
                expected *= t.Shape[d];
                elements *= t.Shape[d];
            }
            if (t.Offset + elements > t.Storage.ElementCount)
                throw new LlmBuildException(ErrorCodes.BadTensorOffsets,
                    $"'{path}': tensor '{name}' ({elements} elements at offset {t.Offset}) runs past the end of storage '{t.Storage.Key}' ({t.Storage.ElementCount} elements).", path);
            result.Add(new TensorLocation(new TensorInfo(name, t.Storage.DType, t.Shape, path), file, entry.DataOffset + t.Offset * size));
        }
        return result;
    }
}
