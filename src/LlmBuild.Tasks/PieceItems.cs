using Microsoft.Build.Framework;

namespace LlmBuild.Tasks;

/// <summary>Reading the per-piece items the stage targets pass (paths are metadata set in LlmBuild.Stages.targets).</summary>
internal static class PieceItems
{
    public static string Path(this ITaskItem item, string metadata)
    {
        string value = item.GetMetadata(metadata);
        if (string.IsNullOrEmpty(value)) throw new InvalidOperationException($"Item '{item.ItemSpec}' lacks metadata '{metadata}'.");
        return value;
    }

    public static string? OptionalPath(this ITaskItem item, string metadata)
    {
        string value = item.GetMetadata(metadata);
        return string.IsNullOrEmpty(value) ? null : value;
    }

    public static IEnumerable<string> Paths(this ITaskItem[]? items) => (items ?? []).Select(i => i.GetMetadata("FullPath"));
}
