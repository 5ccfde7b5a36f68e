using Microsoft.Build.Framework;
using LlmBuild.Core.IO;

namespace LlmBuild.Tasks;

/// <summary>
/// The build lock's tasks (BeginLlmBuild, AcquireLlmBuildLock): loaded in-process, so the lock names the MSBuild process
/// that runs the build (see <see cref="BuildLock"/>), with this build's id.
/// </summary>
public abstract class BuildLockTask : LlmTask
{
    /// <summary>The lock file (obj/llmbuild.lock).</summary>
    [Required] public string LockFile { get; set; } = "";
    /// <summary>This build's id (one per evaluation of the project); the release target compares it with the lock's.</summary>
    [Required] public string BuildId { get; set; } = "";
    /// <summary>How long to wait for another build of the project before failing with LLMB0050.</summary>
    public int LockTimeoutSeconds { get; set; } = 600;
    /// <summary>The options stamp (obj/…/llm/options.stamp).</summary>
    [Required] public string StampFile { get; set; } = "";

    /// <summary>Runs in builds with work to do, before any stage: it is not a stage.</summary>
    protected override bool AnnouncesItself => false;

    /// <summary>Takes the lock for this process and build, waiting for another build up to the timeout.</summary>
    protected void Acquire() =>
        BuildLock.Acquire(LockFile, new BuildLock.Holder(Environment.ProcessId, Processes.StartedUtcTicks(Environment.ProcessId), BuildId),
            TimeSpan.FromSeconds(Math.Max(0, LockTimeoutSeconds)), LogProgress);
}
