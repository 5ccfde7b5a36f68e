using Microsoft.Build.Framework;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.IO;

namespace LlmBuild.Tasks;

/// <summary>
/// The first line of every stage target: a build takes the project's build lock only once some stage has work to do,
/// so a no-op rebuild takes no lock and runs no task. Taking it again in the same build is a no-op. A build that took it
/// late decided without it that the earlier stages were up to date; if the options stamp was rewritten since it read it
/// (another build with other options ran meanwhile), that decision is void and the build stops with LLMB0437 rather than
/// finish on a mix of the two. Loaded in-process (no task host): the lock names the MSBuild process running the build.
/// </summary>
public sealed class AcquireLlmBuildLock : BuildLockTask
{
    /// <summary>The stamp's last write time (as a Windows file time, UTC: what MSBuild's property functions can read) when this build compared it with its options, before any stage ran.</summary>
    public string StampTicks { get; set; } = "";

    protected override void ExecuteCore()
    {
        if (BuildLock.IsHeldBy(LockFile, BuildId)) return;
        Acquire();
        string now = File.Exists(StampFile) ? File.GetLastWriteTimeUtc(StampFile).ToFileTimeUtc().ToString(System.Globalization.CultureInfo.InvariantCulture) : "";
        if (now == StampTicks) return;
        BuildLock.Release(LockFile, BuildId);
        throw new LlmBuildException(ErrorCodes.ConcurrentOptionsChange,
            $"Another build of this project changed its options stamp '{StampFile}' while this build checked, without the build lock, which stages were up to date. " +
            "This build stopped before writing anything; build again (builds of one project with different options run one after the other).", StampFile);
    }
}

