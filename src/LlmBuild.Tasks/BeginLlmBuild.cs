using Microsoft.Build.Framework;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.IO;

namespace LlmBuild.Tasks;

/// <summary>
/// Runs only when an option changed (the targets compare the stamp's first line, the options' hash, without a task) or
/// the SDK files' content was hashed again (a path or write time changed; the cache line is written here):
/// takes the project's build lock (waiting while another build of the project holds it, see <see cref="BuildLock"/>),
/// then writes the options stamp when it differs. A task rather than MSBuild's WriteLinesToFile so a read-only obj/ is
/// a coded error (LLMB0901) naming the path. Loaded in-process (no task host): it holds the lock for the MSBuild
/// process that runs the build.
/// </summary>
public sealed class BeginLlmBuild : BuildLockTask
{
    /// <summary>The targets' 64-bit hash of the options' "Name=Value" lines: the stamp's first line, what they compare.</summary>
    public string OptionsHash { get; set; } = "";
    /// <summary>One item per option: Identity = property name, metadata Value = its value.</summary>
    public ITaskItem[]? Options { get; set; }
    /// <summary>The SDK identity cache (the user's, else obj/…/llm/sdk.identity): the SDK files' paths-and-times key and their content hash (see _LlmHashSdk).</summary>
    public string SdkIdentityCache { get; set; } = "";
    /// <summary>The cache line to write after a miss (the targets hashed the SDK files again); empty: the cache holds.</summary>
    public string SdkIdentityLine { get; set; } = "";

    /// <summary>The stamp's text: the hash line the targets compare, then one "Name=Value" line per option.</summary>
    public static string StampText(string optionsHash, IEnumerable<ITaskItem> options) =>
        $"options-hash={optionsHash}\n" + string.Concat(options.Select(o => $"{o.ItemSpec}={o.GetMetadata("Value")}\n"));

    protected override void ExecuteCore()
    {
        Acquire();
        try
        {
            AtomicFile.WriteAllTextIfChanged(StampFile, StampText(OptionsHash, Options ?? []));
            if (SdkIdentityCache.Length > 0 && SdkIdentityLine.Length > 0)
            {
                try
                {
                    AtomicFile.WriteAllTextIfChanged(SdkIdentityCache, SdkIdentityLine + "\n");
                }
                catch (LlmBuildException e) when (e.Code == ErrorCodes.WriteFailed)
                {
                    // Only a cache: a folder this user cannot write costs the next build the hashing again.
                    Log.LogMessage(MessageImportance.Low, $"LlmBuild: SDK identity not cached: {e.Message}");
                }
            }
        }
        catch
        {
            // The release target runs only after targets that start once this one succeeded.
            BuildLock.Release(LockFile, BuildId);
            throw;
        }
    }
}
