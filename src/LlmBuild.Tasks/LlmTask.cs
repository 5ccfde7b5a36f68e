using Microsoft.Build.Framework;
using Microsoft.Build.Utilities;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.IO;

namespace LlmBuild.Tasks;

/// <summary>
/// Base of every stage task: <see cref="Execute"/> runs <see cref="ExecuteCore"/> and turns a coded
/// <see cref="LlmBuildException"/> into one MSBuild error carrying its code and file. Any other exception is a bug
/// and is logged with its stack trace.
/// </summary>
public abstract class LlmTask : Microsoft.Build.Utilities.Task
{
    public sealed override bool Execute()
    {
        try
        {
            // The stage name on its own line lets logs (and the integration tests) tell which stages ran.
            if (AnnouncesItself) LogProgress($"{GetType().Name}: running");
            ExecuteCore();
        }
        catch (LlmBuildException e)
        {
            LogError(e.Code, e.Message, e.File);
        }
        catch (AggregateException e) when (e.Flatten().InnerExceptions.All(x => x is LlmBuildException))
        {
            foreach (var x in e.Flatten().InnerExceptions.Cast<LlmBuildException>()) LogError(x.Code, x.Message, x.File);
        }
        return !Log.HasLoggedErrors;
    }

    protected abstract void ExecuteCore();

    /// <summary>
    /// Whether the task logs "&lt;Task&gt;: running". A task that runs in every build, a no-op one included, says nothing:
    /// "running" means a stage had work to do.
    /// </summary>
    protected virtual bool AnnouncesItself => true;

    protected void LogError(string code, string message, string? file = null) =>
        Log.LogError(subcategory: "LlmBuild", errorCode: code, helpKeyword: null, file: file, lineNumber: 0, columnNumber: 0,
            endLineNumber: 0, endColumnNumber: 0, message: message);

    protected void LogWarning(LlmBuildWarning w) =>
        Log.LogWarning(subcategory: "LlmBuild", warningCode: w.Code, helpKeyword: null, file: w.File, lineNumber: 0, columnNumber: 0,
            endLineNumber: 0, endColumnNumber: 0, message: w.Message);

    /// <summary>Progress line shown by the terminal logger (high importance so it is visible at normal verbosity).</summary>
    protected void LogProgress(string message) => Log.LogMessage(MessageImportance.High, message);

    /// <summary>
    /// Runs per-piece work in parallel on as many cores as MSBuild grants, while this (the MSBuild) thread
    /// forwards each piece's progress lines as they arrive. Every piece runs even when another fails; coded
    /// errors are logged per piece.
    /// </summary>
    protected void RunPieces<T>(IReadOnlyList<T> items, Func<T, string> describe, Action<T, Action<string>> work)
    {
        if (items.Count == 0) return;
        int cores = Math.Max(1, Math.Min(items.Count, Environment.ProcessorCount));
        int granted = cores;
        if (BuildEngine is IBuildEngine9 engine9)
        {
            granted = Math.Max(1, engine9.RequestCores(cores));
        }
        var lines = new System.Collections.Concurrent.ConcurrentQueue<string>();
        var errors = new System.Collections.Concurrent.ConcurrentQueue<LlmBuildException>();
        try
        {
            var run = System.Threading.Tasks.Task.Run(() => Parallel.ForEach(items,
                new ParallelOptions { MaxDegreeOfParallelism = granted },
                item =>
                {
                    string name = describe(item);
                    var watch = System.Diagnostics.Stopwatch.StartNew();
                    try
                    {
                        work(item, line => lines.Enqueue($"{name}: {line}"));
                        if (PieceDelay > 0) Thread.Sleep(PieceDelay);
                        lines.Enqueue($"{name}: done in {watch.Elapsed.TotalSeconds:0.00} s");
                    }
                    catch (LlmBuildException e)
                    {
                        errors.Enqueue(e);
                    }
                }));
            while (!run.Wait(100)) Drain(lines);
            run.GetAwaiter().GetResult();
            Drain(lines);
        }
        finally
        {
            if (BuildEngine is IBuildEngine9 engine) engine.ReleaseCores(granted);
        }
        foreach (var e in errors.OrderBy(e => e.Message, StringComparer.Ordinal)) LogError(e.Code, e.Message, e.File);
    }

    /// <summary>
    /// Removes the temporaries a killed build left beside this stage's outputs (an output that was being written
    /// when the build died is missing, so its stage always reruns and cleans up first).
    /// </summary>
    protected static void DeleteStaleTemporariesBeside(IEnumerable<string> outputs)
    {
        foreach (string dir in outputs.Select(o => System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(o))!).Distinct(StringComparer.Ordinal))
            LlmBuild.Core.IO.AtomicFile.DeleteStaleTemporaries(dir);
    }

    /// <summary>Fault-injection knob for the kill-and-resume tests: a pause after each piece (LLMBUILD_PIECE_DELAY_MS).</summary>
    private static readonly int PieceDelay =
        int.TryParse(Environment.GetEnvironmentVariable("LLMBUILD_PIECE_DELAY_MS"), out int ms) ? ms : 0;

    private void Drain(System.Collections.Concurrent.ConcurrentQueue<string> lines)
    {
        while (lines.TryDequeue(out string? line)) LogProgress(line);
    }
}
