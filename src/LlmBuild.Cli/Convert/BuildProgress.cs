using System.Text.RegularExpressions;
using LlmBuild.Core.Diagnostics;

namespace LlmBuild.Cli.Convert;

public enum StageState { Pending, Running, Finished }

/// <summary>One stage of the build as the progress display sees it.</summary>
public sealed class StageProgress(string task, string label)
{
    /// <summary>The stage task's name, as its progress events name it.</summary>
    public string Task { get; } = task;
    public string Label { get; } = label;
    public StageState State { get; internal set; }
    /// <summary>Pieces (or weight owners) the stage handles; 0 until known.</summary>
    public int Total { get; internal set; }
    /// <summary>Pieces finished, rebuilt or found up to date.</summary>
    public int Done { get; internal set; }
    public int UpToDate { get; internal set; }
    public DateTime StartedAt { get; internal set; }
    /// <summary>Time spent on the pieces this stage rebuilt (sum of their own times).</summary>
    public double RebuiltSeconds { get; internal set; }
    internal DateTime LastRebuiltAt { get; set; }
    internal int Rebuilt { get; set; }

    /// <summary>Remaining time from the rate at which rebuilt pieces have finished, or null before the first one.</summary>
    public TimeSpan? Eta(DateTime now)
    {
        if (State != StageState.Running || Total == 0 || Rebuilt == 0) return null;
        int remaining = Math.Max(0, Total - Done);
        double perPiece = (LastRebuiltAt - StartedAt).TotalSeconds / Rebuilt;
        return TimeSpan.FromSeconds(Math.Max(0, perPiece * remaining - (now - LastRebuiltAt).TotalSeconds));
    }
}

/// <summary>What the build printed or reported: a console line, or a structured event from the progress file.</summary>
public abstract record BuildOutput
{
    public sealed record Line(string Text) : BuildOutput;
    public sealed record Event(BuildEvent Value) : BuildOutput;
}

/// <summary>What one piece of build output meant.</summary>
public abstract record ProgressEvent
{
    public sealed record StageStarted(StageProgress Stage) : ProgressEvent;
    public sealed record PieceFinished(StageProgress Stage, string Piece, double? Seconds) : ProgressEvent;
    /// <summary>
    /// Anything else: warnings, errors, the resolve summary, compiler output. <paramref name="IsNoise"/> marks
    /// MSBuild's own chatter (restore lines, the success summary) that the displays leave out.
    /// </summary>
    public sealed record Other(string Line, bool IsError, bool IsNoise = false) : ProgressEvent;
}

/// <summary>
/// Follows a build from the structured events its stage tasks append to the progress file (<see cref="BuildEvent"/>):
/// a stage started, a piece rebuilt in X s, a piece up to date. The number of pieces per stage comes from the resolve
/// stage's owners.txt (quantize) and pieces.txt (export, codegen). Console lines are passed on, marked as errors or as
/// MSBuild's own chatter.
/// </summary>
public sealed partial class BuildProgress
{
    private readonly string _intermediateDir;
    private readonly Func<DateTime> _clock;
    private StageProgress? _current;

    public BuildProgress(string intermediateDir, Func<DateTime>? clock = null)
    {
        _intermediateDir = intermediateDir;
        _clock = clock ?? (() => DateTime.UtcNow);
        Stages =
        [
            new("ResolveLlmConfig", "resolve"),
            new("QuantizeLlmWeights", "quantize"),
            new("ExportLlmMlir", "export MLIR"),
            new("CompileLlmPieces", "codegen"),
            new("CombineLlmBModel", "combine"),
        ];
    }

    public IReadOnlyList<StageProgress> Stages { get; }
    public DateTime Now => _clock();

    public ProgressEvent Observe(BuildOutput output) => output switch
    {
        BuildOutput.Event { Value: var e } => Observe(e),
        BuildOutput.Line { Text: var line } => Other(line),
        _ => throw new ArgumentOutOfRangeException(nameof(output)),
    };

    /// <summary>
    /// Applies one event. A piece event of a stage not yet running starts it and counts the piece, but is seen as the
    /// stage's start (the tpu-mlir backend's per-piece runs report pieces only); events of stages the display does not
    /// show (verify) are noise.
    /// </summary>
    public ProgressEvent Observe(BuildEvent e)
    {
        if (Stages.FirstOrDefault(s => s.Task == e.Stage) is not { } stage) return new ProgressEvent.Other("", false, IsNoise: true);
        ProgressEvent? started = null;
        if (e.Kind == BuildEventKind.StageStarted || stage.State != StageState.Running)
        {
            if (_current is { State: StageState.Running } previous && previous != stage) Finish(previous);
            stage.State = StageState.Running;
            stage.StartedAt = stage.LastRebuiltAt = _clock();
            stage.Done = stage.UpToDate = stage.Rebuilt = 0;
            stage.RebuiltSeconds = 0;
            stage.Total = TotalOf(stage);
            _current = stage;
            started = new ProgressEvent.StageStarted(stage);
            if (e.Kind == BuildEventKind.StageStarted) return started;
        }
        stage.Done++;
        if (e.Kind == BuildEventKind.PieceUpToDate)
        {
            stage.UpToDate++;
            return started ?? new ProgressEvent.PieceFinished(stage, e.Piece ?? "", null);
        }
        double seconds = e.Seconds ?? 0;
        stage.Rebuilt++;
        stage.RebuiltSeconds += seconds;
        stage.LastRebuiltAt = _clock();
        return started ?? new ProgressEvent.PieceFinished(stage, e.Piece ?? "", seconds);
    }

    /// <summary>A console line: never progress (that comes as events), only marked as an error or as noise.</summary>
    public static ProgressEvent.Other Other(string rawLine)
    {
        string line = StripNodePrefix().Replace(rawLine, "").Trim();
        // A crashed task's stack trace is for LlmBuild's developers (build.log keeps it); its first lines say what failed.
        return new ProgressEvent.Other(rawLine, ErrorLine().IsMatch(line), NoiseLine().IsMatch(line) || StackTraceLine().IsMatch(line));
    }

    /// <summary>The build ended: every stage is finished (stages MSBuild skipped as up to date never logged).</summary>
    public void Complete()
    {
        foreach (var s in Stages) Finish(s);
    }

    private static void Finish(StageProgress s)
    {
        if (s.State == StageState.Running && s.Total > 0) s.Done = Math.Max(s.Done, s.Total);
        s.State = StageState.Finished;
    }

    private int TotalOf(StageProgress stage) => stage.Task switch
    {
        "QuantizeLlmWeights" => CountLines("owners.txt"),
        "ExportLlmMlir" or "CompileLlmPieces" => CountLines("pieces.txt"),
        _ => 0,
    };

    private int CountLines(string file)
    {
        try
        {
            return File.ReadLines(Path.Combine(_intermediateDir, file)).Count(l => l.Trim().Length > 0);
        }
        catch (IOException)
        {
            return 0;
        }
    }

    [GeneratedRegex(@"^\s*\d+>")]
    private static partial Regex StripNodePrefix();
    [GeneratedRegex(@"^(Build succeeded\.|[0-9]+ Warning\(s\)|[0-9]+ Error\(s\)|Time Elapsed [0-9:.]+|Determining projects to restore\.\.\.|All projects are up-to-date for restore\.|Restored .+ \(in [0-9.]+ m?s\)\.|[0-9]+ of [0-9]+ projects are up-to-date for restore\.)?$")]
    private static partial Regex NoiseLine();
    /// <summary>A stack frame or stack-trace separator, as MSBuild prints a crashed task's exception: one line per
    /// frame, each behind the error's "file(line,col): error MSB4018:" prefix.</summary>
    [GeneratedRegex(@"(^|: error [A-Z]+[0-9]+: )\s*(at \S+\(.*\)( in .+:line [0-9]+)?|--- End of .+ ---)( \[[^\]]+\])?$")]
    private static partial Regex StackTraceLine();
    [GeneratedRegex(@"(^|\s)error( [A-Z]+[0-9]+)? ?:")]
    private static partial Regex ErrorLine();
}
