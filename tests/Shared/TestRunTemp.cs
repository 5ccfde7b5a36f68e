using System.Diagnostics;
using System.Reflection;

namespace LlmBuild.Tests;

/// <summary>
/// Gives each test assembly's run one temporary folder and points TMPDIR at it, so every temporary file and folder the
/// tests make (through Path.GetTempPath, and in child processes such as `dotnet build` or python3) lands there. The folder
/// is deleted when the run ends: a test run leaves nothing behind, however many builds its tests make, and repeated runs
/// never fill the disk. Folders of runs that crashed (their process is gone) are removed when the next run starts.
/// </summary>
[TestClass]
public sealed class TestRunTemp
{
    private static string? _root;

    /// <summary>This run's temporary folder (the TMPDIR the tests see).</summary>
    public static string Root => _root ?? throw new InvalidOperationException("TestRunTemp.Start has not run.");

    [AssemblyInitialize]
    public static void Start(TestContext _)
    {
        string parent = Path.Combine(Path.GetTempPath(), "llmbuild-test-runs");
        Directory.CreateDirectory(parent);
        RemoveAbandonedRuns(parent);
        string name = Assembly.GetExecutingAssembly().GetName().Name!.Replace("LlmBuild.", "").Replace(".Tests", "");
        _root = Path.Combine(parent, $"{name}-{Environment.ProcessId}");
        DeleteTree(_root);
        Directory.CreateDirectory(_root);
        Environment.SetEnvironmentVariable("TMPDIR", _root);
    }

    [AssemblyCleanup]
    public static void Finish()
    {
        if (_root is not null) DeleteTree(_root);
    }

    /// <summary>Deletes a folder and everything in it; a folder already gone is not an error.</summary>
    public static void DeleteTree(string dir)
    {
        if (!Directory.Exists(dir)) return;
        try { Directory.Delete(dir, recursive: true); }
        catch (IOException) { }            // a file still held open by a child process: the next run removes it
        catch (UnauthorizedAccessException) { }
    }

    /// <summary>Run folders are named "&lt;assembly&gt;-&lt;pid&gt;": a folder whose process no longer runs was abandoned.</summary>
    private static void RemoveAbandonedRuns(string parent)
    {
        foreach (var dir in new DirectoryInfo(parent).GetDirectories())
        {
            int dash = dir.Name.LastIndexOf('-');
            if (dash < 0 || !int.TryParse(dir.Name[(dash + 1)..], out int pid) || !IsRunning(pid)) DeleteTree(dir.FullName);
        }
    }

    private static bool IsRunning(int pid)
    {
        try { using var p = Process.GetProcessById(pid); return !p.HasExited; }
        catch (ArgumentException) { return false; }
        catch (InvalidOperationException) { return false; }
    }
}
