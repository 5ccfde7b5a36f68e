using System.Text.Json;
using LlmBuild.Core.Diagnostics;

namespace LlmBuild.Core.Checkpoints;

/// <summary>The <c>*.index.json</c> of a sharded checkpoint: <c>{"weight_map": {tensor: shard file}}</c>.</summary>
internal static class CheckpointIndex
{
    public static Dictionary<string, string> ReadWeightMap(string indexPath)
    {
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(File.ReadAllBytes(indexPath));
        }
        catch (JsonException e)
        {
            throw new LlmBuildException(ErrorCodes.BadCheckpointIndex, $"'{indexPath}' is not valid JSON: {e.Message}", indexPath, e);
        }
        catch (IOException e)
        {
            throw new LlmBuildException(ErrorCodes.ReadFailed, $"Cannot read '{indexPath}': {e.Message}", indexPath, e);
        }
        using var _ = doc;
        if (doc.RootElement.ValueKind != JsonValueKind.Object
            || !doc.RootElement.TryGetProperty("weight_map", out var map) || map.ValueKind != JsonValueKind.Object)
            throw new LlmBuildException(ErrorCodes.BadCheckpointIndex, $"'{indexPath}' has no \"weight_map\" object.", indexPath);
        var result = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var p in map.EnumerateObject())
        {
            if (p.Value.ValueKind != JsonValueKind.String)
                throw new LlmBuildException(ErrorCodes.BadCheckpointIndex, $"'{indexPath}': weight_map entry '{p.Name}' is not a file name.", indexPath);
            result[p.Name] = p.Value.GetString()!;
        }
        if (result.Count == 0)
            throw new LlmBuildException(ErrorCodes.BadCheckpointIndex, $"'{indexPath}' has an empty weight_map.", indexPath);
        return result;
    }

    /// <summary>A shard's full path; a coded error for names escaping the folder or missing files.</summary>
    public static string ShardPath(string indexPath, string dir, string shard)
    {
        if (shard.Length == 0 || Path.IsPathRooted(shard) || shard.Contains("..", StringComparison.Ordinal) || shard.IndexOfAny(['/', '\\']) >= 0)
            throw new LlmBuildException(ErrorCodes.BadCheckpointIndex, $"'{indexPath}' names shard '{shard}', which is not a plain file name.", indexPath);
        string path = Path.Combine(dir, shard);
        if (!File.Exists(path))
            throw new LlmBuildException(ErrorCodes.BadCheckpointIndex,
                $"'{indexPath}' refers to shard '{shard}', which is missing from '{dir}'. Download the missing shard.", indexPath);
        return path;
    }
}
