using System.Collections.Concurrent;
using System.Globalization;
using Spectre.Console;
using LlmBuild.Core.Plan;

namespace LlmBuild.Cli.Convert;

/// <summary>Shows a build's progress from the lines <see cref="BuildProgress"/> interprets.</summary>
public interface IProgressDisplay
{
    /// <summary>
    /// Consumes every line until <paramref name="lines"/> completes; then, if <paramref name="succeeded"/> says
    /// so, marks every stage finished (stages MSBuild skipped as up to date log nothing).
    /// </summary>
    void Run(BuildProgress progress, BlockingCollection<string> lines, Func<bool> succeeded);
}

public static class ProgressDisplays
{
    /// <summary>A live display on a terminal; plain lines when output is redirected or the terminal cannot redraw.</summary>
    public static IProgressDisplay ForConsole() =>
        !Console.IsOutputRedirected && AnsiConsole.Profile.Capabilities.Interactive && AnsiConsole.Profile.Capabilities.Ansi
            ? new LiveProgressDisplay()
            : new PlainProgressDisplay(Console.Out, Console.Error);

    internal static string FormatEta(TimeSpan? eta) =>
        eta is not { } t ? "" : t.TotalHours >= 1 ? t.ToString(@"h\:mm\:ss", CultureInfo.InvariantCulture) : t.ToString(@"m\:ss", CultureInfo.InvariantCulture);
}

/// <summary>
/// One line per event, for logs and pipes: "[2/5] quantize (6 pieces)", then "  block_0: done in 0.41 s
/// (1/6, ETA 0:02)". Lines that are not progress (warnings, errors, the resolve summary) pass through;
/// errors go to the error stream.
/// </summary>
public sealed class PlainProgressDisplay(TextWriter output, TextWriter error) : IProgressDisplay
{
    public void Run(BuildProgress progress, BlockingCollection<string> lines, Func<bool> succeeded)
    {
        foreach (string line in lines.GetConsumingEnumerable()) Write(progress, progress.Observe(line));
        if (succeeded()) progress.Complete();
    }

    public void Write(BuildProgress progress, ProgressEvent e)
    {
        switch (e)
        {
            case ProgressEvent.StageStarted s:
                int index = progress.Stages.ToList().IndexOf(s.Stage) + 1;
                output.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"[{index}/{progress.Stages.Count}] {s.Stage.Label}{(s.Stage.Total > 0 ? $" ({s.Stage.Total} pieces)" : "")}"));
                break;
            case ProgressEvent.PieceFinished p:
                string count = p.Stage.Total > 0 ? string.Create(CultureInfo.InvariantCulture, $"{p.Stage.Done}/{p.Stage.Total}") : p.Stage.Done.ToString(CultureInfo.InvariantCulture);
                string eta = ProgressDisplays.FormatEta(p.Stage.Eta(progress.Now));
                output.WriteLine(p.Seconds is { } sec
                    ? string.Create(CultureInfo.InvariantCulture, $"  {p.Piece}: done in {sec:0.00} s ({count}{(eta.Length > 0 && p.Stage.Done < p.Stage.Total ? $", ETA {eta}" : "")})")
                    : $"  {p.Piece}: up to date ({count})");
                break;
            case ProgressEvent.Other o when !o.IsNoise:
                (o.IsError ? error : output).WriteLine(o.IsError ? o.Line.Trim() : o.Line.TrimStart());
                break;
        }
    }
}

/// <summary>
/// A Spectre.Console progress table on a terminal: one bar per stage with its piece count, the piece last
/// finished and the remaining time. Other output (warnings, errors) is printed once the display closes, so it
/// never tears the redrawn table.
/// </summary>
public sealed class LiveProgressDisplay : IProgressDisplay
{
    public void Run(BuildProgress progress, BlockingCollection<string> lines, Func<bool> succeeded)
    {
        var held = new List<ProgressEvent.Other>();
        AnsiConsole.Progress()
            .AutoClear(false)
            .HideCompleted(false)
            .Columns(new TaskDescriptionColumn { Alignment = Justify.Left }, new ProgressBarColumn(), new PercentageColumn(),
                new RemainingTimeColumn(), new SpinnerColumn())
            .Start(ctx =>
            {
                var tasks = progress.Stages.ToDictionary(s => s, s => ctx.AddTask(Markup.Escape(s.Label), autoStart: false, maxValue: 1));
                foreach (string line in lines.GetConsumingEnumerable())
                {
                    switch (progress.Observe(line))
                    {
                        case ProgressEvent.StageStarted s:
                            foreach (var (stage, task) in tasks)
                                if (stage.State == StageState.Finished) Finish(task);
                            var started = tasks[s.Stage];
                            started.MaxValue = Math.Max(1, s.Stage.Total);
                            started.IsIndeterminate = s.Stage.Total == 0;
                            started.StartTask();
                            break;
                        case ProgressEvent.PieceFinished p:
                            var t = tasks[p.Stage];
                            t.IsIndeterminate = false;
                            t.MaxValue = Math.Max(Math.Max(1, p.Stage.Total), p.Stage.Done);
                            t.Value = p.Stage.Done;
                            t.Description = $"{Markup.Escape(p.Stage.Label)} [grey]{Markup.Escape(p.Piece)}[/]";
                            break;
                        case ProgressEvent.Other o when !o.IsNoise:
                            held.Add(o);
                            break;
                    }
                }
                bool ok = succeeded();
                if (ok) progress.Complete();
                foreach (var (stage, task) in tasks)
                {
                    task.Description = Markup.Escape(stage.Label);
                    if (ok) Finish(task);
                    else if (task.IsStarted) task.StopTask();
                }
            });
        foreach (var o in held)
        {
            if (o.IsError) Console.Error.WriteLine(o.Line.Trim());
            else Console.Out.WriteLine(o.Line.TrimStart());
        }
    }

    private static void Finish(ProgressTask task)
    {
        task.IsIndeterminate = false;
        task.Value = task.MaxValue;
        if (!task.IsStarted) task.StartTask();
        task.StopTask();
    }
}
