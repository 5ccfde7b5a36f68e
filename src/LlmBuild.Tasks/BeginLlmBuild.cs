using Microsoft.Build.Framework;
using LlmBuild.Core.IO;

namespace LlmBuild.Tasks;

/// <summary>
/// The build's first write: takes the project's build lock (waiting while another build of the project holds it, see
/// <see cref="BuildLock"/>), then writes the options stamp only when an option changed. A task rather than MSBuild's
/// WriteLinesToFile so a read-only obj/ is a coded error (LLMB0901) naming the path.
/// </summary>
public sealed class BeginLlmBuild : LlmTask
{
    /// <summary>The lock file (obj/llmbuild.lock).</summary>
    [Required] public string LockFile { get; set; } = "";
    /// <summary>This build's id (one per evaluation of the project); the release target compares it with the lock's.</summary>
    [Required] public string BuildId { get; set; } = "";
    /// <summary>How long to wait for another build of the project before failing with LLMB0050.</summary>
    public int LockTimeoutSeconds { get; set; } = 600;
    [Required] public string StampFile { get; set; } = "";
    /// <summary>One item per option: Identity = property name, metadata Value = its value.</summary>
    public ITaskItem[]? Options { get; set; }

    /// <summary>Runs in every build, no-op rebuilds included.</summary>
    protected override bool AnnouncesItself => false;

    protected override void ExecuteCore()
    {
        int node = Processes.ParentOfCurrent();
        var self = new BuildLock.Holder(node, Processes.StartedUtcTicks(node), BuildId);
        BuildLock.Acquire(LockFile, self, TimeSpan.FromSeconds(Math.Max(0, LockTimeoutSeconds)), LogProgress);
        try
        {
            string text = string.Concat((Options ?? []).Select(o => $"{o.ItemSpec}={o.GetMetadata("Value")}\n"));
            AtomicFile.WriteAllTextIfChanged(StampFile, text);
        }
        catch
        {
            // The release target runs only after targets that start once this one succeeded.
            BuildLock.Release(LockFile, BuildId);
            throw;
        }
    }
}
