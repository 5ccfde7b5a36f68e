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
    /// <summary>The file the build's progress events go to (the LlmBuildProgressFile property); empty: none.</summary>
    public string? ProgressFile { get; set; }

    /// <summary>The stage this task runs, as progress events and log lines name it.</summary>
    protected string Stage => GetType().Name;

    public sealed override bool Execute()
    {
        try
        {
            // The stage name on its own line lets logs (and the integration tests) tell which stages ran.
            if (AnnouncesItself) CodedLog.Progress(Log, ProgressFile, new BuildEvent(BuildEventKind.StageStarted, Stage), $"{Stage}: running");
            ExecuteCore();
        }
        catch (LlmBuildException e)
        {
            CodedLog.Error(Log, e);
        }
        catch (AggregateException e) when (e.Flatten().InnerExceptions.All(x => x is LlmBuildException))
        {
            foreach (var x in e.Flatten().InnerExceptions.Cast<LlmBuildException>()) CodedLog.Error(Log, x);
        }
        return !Log.HasLoggedErrors;
    }

    protected abstract void ExecuteCore();

    /// <summary>
    /// Whether the task logs "&lt;Task&gt;: running". A task that runs in every build, a no-op one included, says nothing:
    /// "running" means a stage had work to do.
    /// </summary>
    protected virtual bool AnnouncesItself => true;

    protected void LogError(string code, string message, string? file = null) => CodedLog.Error(Log, code, message, file);

    protected void LogWarning(LlmBuildWarning w) => CodedLog.Warning(Log, w);

    /// <summary>Progress line shown by the terminal logger (high importance so it is visible at normal verbosity).</summary>
    protected void LogProgress(string message) => Log.LogMessage(MessageImportance.High, message);

    /// <summary>Reports a piece (or weight owner) whose outputs are newer than its inputs.</summary>
    protected void LogPieceUpToDate(string piece) =>
        CodedLog.Progress(Log, ProgressFile, new BuildEvent(BuildEventKind.PieceUpToDate, Stage, piece), $"{piece}: up to date");

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
        // A piece's own lines, then its completion event: logged and appended on this (the MSBuild) thread, in order.
        var lines = new System.Collections.Concurrent.ConcurrentQueue<(string Line, BuildEvent? Done)>();
        var errors = new System.Collections.Concurrent.ConcurrentQueue<LlmBuildException>();
        try
        {
            // In the given order, one item at a time (no chunks): a stage lists its longest or most shared work first.
            var run = System.Threading.Tasks.Task.Run(() => Parallel.ForEach(
                System.Collections.Concurrent.Partitioner.Create(items, System.Collections.Concurrent.EnumerablePartitionerOptions.NoBuffering),
                new ParallelOptions { MaxDegreeOfParallelism = granted },
                item =>
                {
                    string name = describe(item);
                    var watch = System.Diagnostics.Stopwatch.StartNew();
                    try
                    {
                        work(item, line => lines.Enqueue(($"{name}: {line}", null)));
                        double seconds = Math.Round(watch.Elapsed.TotalSeconds, 2);
                        lines.Enqueue(($"{name}: done in {seconds:0.00} s", new BuildEvent(BuildEventKind.PieceDone, Stage, name, seconds)));
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
        foreach (var e in errors.OrderBy(e => e.Message, StringComparer.Ordinal)) CodedLog.Error(Log, e);
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

    private void Drain(System.Collections.Concurrent.ConcurrentQueue<(string Line, BuildEvent? Done)> lines)
    {
        while (lines.TryDequeue(out var entry))
        {
            if (entry.Done is { } done) CodedLog.Progress(Log, ProgressFile, done, entry.Line);
            else LogProgress(entry.Line);
        }
    }
}
