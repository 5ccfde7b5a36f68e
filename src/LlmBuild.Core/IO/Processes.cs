using System.Diagnostics;

namespace LlmBuild.Core.IO;

/// <summary>Whether the process that wrote a temporary file or holds a lock is still running.</summary>
public static class Processes
{
    /// <summary>
    /// True when a process with id <paramref name="pid"/> runs and, when <paramref name="startedUtcTicks"/> is given, started
    /// then (within a second): a recycled id then belongs to another process and does not count.
    /// </summary>
    public static bool IsAlive(int pid, long? startedUtcTicks = null)
    {
        if (pid <= 0 || IsZombie(pid)) return false;
        try
        {
            using var p = Process.GetProcessById(pid);
            if (p.HasExited) return false;
            return startedUtcTicks is not { } ticks || Math.Abs(p.StartTime.ToUniversalTime().Ticks - ticks) < TimeSpan.TicksPerSecond;
        }
        catch (ArgumentException) { return false; }           // no such process
        catch (InvalidOperationException) { return false; }   // it exited while being looked at
        catch (System.ComponentModel.Win32Exception) { return true; } // exists, but belongs to someone we may not inspect
    }

    /// <summary>
    /// A killed process whose parent has not yet collected it still has an id (and a /proc entry) but runs nothing: a
    /// killed build must not hold its lock until its parent notices.
    /// </summary>
    private static bool IsZombie(int pid)
    {
        try
        {
            string stat = File.ReadAllText($"/proc/{pid}/stat");
            int close = stat.LastIndexOf(')');
            return close > 0 && close + 2 < stat.Length && stat[close + 2] is 'Z' or 'X';
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return false; }
    }

    /// <summary>When the process started (UTC ticks), or null when it cannot be told.</summary>
    public static long? StartedUtcTicks(int pid)
    {
        try
        {
            using var p = Process.GetProcessById(pid);
            return p.StartTime.ToUniversalTime().Ticks;
        }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException or System.ComponentModel.Win32Exception or NotSupportedException)
        {
            return null;
        }
    }
}
