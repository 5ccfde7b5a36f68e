using System.Globalization;
using LlmBuild.Core.Diagnostics;

namespace LlmBuild.Core.IO;

/// <summary>
/// Serializes the builds of one project (DESIGN §14). The lock is a small file naming the holder — the process that runs
/// the build (its id and start time) and the build's own id — created and replaced only while holding an OS file lock on a
/// guard file beside it, so two builds never both take it. A second build waits for the holder to finish (saying so) and
/// fails with <see cref="ErrorCodes.ProjectBuildLocked"/> after the timeout. A lock whose holder process is gone (a
/// killed build), or whose holder process now runs another build (an MSBuild node reused after a cancelled build), is
/// stale and is taken over.
/// </summary>
public static class BuildLock
{
    /// <summary>The holder recorded in a lock file.</summary>
    public sealed record Holder(int ProcessId, long? StartedUtcTicks, string BuildId)
    {
        public string ToText() => string.Create(CultureInfo.InvariantCulture,
            $"pid={ProcessId}\nstarted={StartedUtcTicks?.ToString(CultureInfo.InvariantCulture) ?? ""}\nbuild={BuildId}\n");

        public static Holder? Parse(string text)
        {
            var fields = text.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => l.Split('=', 2)).Where(f => f.Length == 2)
                .GroupBy(f => f[0], StringComparer.Ordinal).ToDictionary(g => g.Key, g => g.Last()[1], StringComparer.Ordinal);
            if (!fields.TryGetValue("pid", out string? pid) || !int.TryParse(pid, NumberStyles.None, CultureInfo.InvariantCulture, out int id)) return null;
            long? started = fields.TryGetValue("started", out string? s) && long.TryParse(s, NumberStyles.None, CultureInfo.InvariantCulture, out long t) ? t : null;
            return new Holder(id, started, fields.GetValueOrDefault("build") ?? "");
        }
    }

    /// <summary>
    /// Takes the lock for <paramref name="self"/>, waiting up to <paramref name="timeout"/> for a live holder. Taking it again
    /// for the same build id is a no-op. <paramref name="log"/> hears once that the build waits, and for whom.
    /// </summary>
    public static void Acquire(string lockPath, Holder self, TimeSpan timeout, Action<string>? log = null)
    {
        string full = Path.GetFullPath(lockPath);
        var waited = System.Diagnostics.Stopwatch.StartNew();
        Holder? reported = null;
        while (true)
        {
            Holder? holder = WithGuard(full, () =>
            {
                Holder? current = Read(full);
                if (current is not null && current.BuildId != self.BuildId && IsLive(current, self)) return current;
                AtomicFile.WriteAllText(full, self.ToText());
                return null;
            });
            if (holder is null) return;
            if (waited.Elapsed >= timeout)
                throw new LlmBuildException(ErrorCodes.ProjectBuildLocked,
                    $"Another build of this project (process {holder.ProcessId}) has held '{full}' for the last {waited.Elapsed.TotalSeconds:0} s, " +
                    $"the longest this build waits (LlmBuildLockTimeoutSeconds={timeout.TotalSeconds:0}). Let that build finish and build again; " +
                    $"if process {holder.ProcessId} is not a build of this project, end it or delete the lock file.", full);
            if (reported != holder)
            {
                log?.Invoke($"waiting for another build of this project (process {holder.ProcessId}) to finish: it holds '{full}'");
                reported = holder;
            }
            Thread.Sleep(200);
        }
    }

    /// <summary>Whether the build <paramref name="buildId"/> holds the lock now (a read, no guard: only that build takes or drops it for itself).</summary>
    public static bool IsHeldBy(string lockPath, string buildId) => Read(Path.GetFullPath(lockPath))?.BuildId == buildId;

    /// <summary>Removes the lock if <paramref name="buildId"/> holds it (a lock another build took over is left alone).</summary>
    public static void Release(string lockPath, string buildId)
    {
        string full = Path.GetFullPath(lockPath);
        WithGuard(full, () =>
        {
            if (Read(full)?.BuildId == buildId) AtomicFile.Delete(full);
            return (Holder?)null;
        });
    }

    /// <summary>The holder is alive and still running its own build (a reused node that now runs this build is not).</summary>
    private static bool IsLive(Holder holder, Holder self) =>
        holder.ProcessId != self.ProcessId && Processes.IsAlive(holder.ProcessId, holder.StartedUtcTicks);

    private static Holder? Read(string path)
    {
        try { return File.Exists(path) ? Holder.Parse(File.ReadAllText(path)) : null; }
        catch (FileNotFoundException) { return null; }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new LlmBuildException(ErrorCodes.ReadFailed, $"Cannot read the build lock '{path}': {e.Message.TrimEnd('.')}. Check its permissions.", path, e);
        }
    }

    /// <summary>Runs <paramref name="body"/> while holding an exclusive OS lock on "&lt;lock&gt;.guard" (waiting for it briefly).</summary>
    private static T WithGuard<T>(string lockPath, Func<T> body)
    {
        string guard = lockPath + ".guard";
        AtomicFile.CreateDirectory(Path.GetDirectoryName(lockPath)!);
        for (int attempt = 0; ; attempt++)
        {
            FileStream stream;
            try
            {
                // FileShare.None is an exclusive advisory lock on Unix too: the other build's open fails until this one closes.
                stream = new FileStream(guard, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
            }
            catch (UnauthorizedAccessException e)
            {
                throw new LlmBuildException(ErrorCodes.WriteFailed, $"Cannot write '{guard}': {e.Message.TrimEnd('.')}. Make the folder writable.", guard, e);
            }
            catch (IOException e) when (attempt < 500)
            {
                _ = e; // held by the other build for the few milliseconds it inspects the lock
                Thread.Sleep(10);
                continue;
            }
            catch (IOException e)
            {
                throw new LlmBuildException(ErrorCodes.WriteFailed, $"Cannot open '{guard}': {e.Message.TrimEnd('.')}.", guard, e);
            }
            using (stream) return body();
        }
    }
}
