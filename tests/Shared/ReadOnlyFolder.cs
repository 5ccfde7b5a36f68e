using System.Diagnostics;

namespace LlmBuild.Tests;

/// <summary>
/// Makes a folder unwritable for the test's duration: mode 0555, and, because root ignores modes, the immutable
/// attribute where the file system supports it. Disposing makes it writable again (so the run's cleanup can delete it).
/// When neither takes effect the test is inconclusive, not passed.
/// </summary>
public sealed class ReadOnlyFolder : IDisposable
{
    private readonly string _path;
    private bool _immutable;

    public ReadOnlyFolder(string path)
    {
        _path = path;
        Directory.CreateDirectory(path);
        if (OperatingSystem.IsWindows()) Assert.Inconclusive("Read-only folders are made with Unix modes.");
        SetMode(path, UnixFileMode.UserRead | UnixFileMode.UserExecute | UnixFileMode.GroupRead | UnixFileMode.GroupExecute | UnixFileMode.OtherRead | UnixFileMode.OtherExecute);
        if (IsWritable(path) && Chattr("+i", path)) _immutable = true;
        if (IsWritable(path))
        {
            Dispose();
            Assert.Inconclusive($"Cannot make '{path}' read-only here (running as root without chattr).");
        }
    }

    public void Dispose()
    {
        if (_immutable) _immutable = !Chattr("-i", _path);
        SetMode(_path, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute | UnixFileMode.GroupRead | UnixFileMode.GroupExecute | UnixFileMode.OtherRead | UnixFileMode.OtherExecute);
    }

    private static void SetMode(string path, UnixFileMode mode)
    {
        if (!OperatingSystem.IsWindows()) File.SetUnixFileMode(path, mode);
    }

    private static bool IsWritable(string dir)
    {
        string probe = Path.Combine(dir, $".probe-{Guid.NewGuid():N}");
        try
        {
            File.WriteAllBytes(probe, []);
            File.Delete(probe);
            return true;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return false; }
    }

    private static bool Chattr(string flag, string path)
    {
        try
        {
            using var p = Process.Start(new ProcessStartInfo("chattr", [flag, path]) { RedirectStandardError = true, RedirectStandardOutput = true });
            if (p is null) return false;
            p.WaitForExit(10_000);
            return p.HasExited && p.ExitCode == 0;
        }
        catch (System.ComponentModel.Win32Exception) { return false; }
    }
}
