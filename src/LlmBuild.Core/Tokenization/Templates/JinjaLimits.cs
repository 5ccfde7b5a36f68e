using System.Globalization;
using System.Runtime.CompilerServices;
using LlmBuild.Core.Diagnostics;

namespace LlmBuild.Core.Tokenization.Templates;

/// <summary>
/// Bounds on parsing and rendering one template. Chat templates come with downloaded checkpoints and the server
/// renders one per request, so a template (or the messages it renders) must not be able to hang a thread, exhaust
/// memory or overflow the stack. Real chat templates stay far below every default: a long conversation renders in
/// about 10^5 steps, nests fewer than 20 levels and is well under a megabyte of text.
/// </summary>
public sealed record JinjaLimits
{
    public static JinjaLimits Default { get; } = new();

    /// <summary>Work allowed in one render: a step is one statement, one expression, one loop iteration, one
    /// element a filter or comparison walks, or 16 characters of text built or read (default 10,000,000, about a second).</summary>
    public long MaxSteps { get; init; } = 10_000_000;

    /// <summary>Nesting allowed: block tags inside each other and brackets/operators in one expression (at parse
    /// time), macro calls inside each other (at render time); default 256.</summary>
    public int MaxDepth { get; init; } = 256;

    /// <summary>Characters of rendered output, and the length (characters or items) of any one string or list the
    /// template builds; default 4 MiB (4,194,304).</summary>
    public int MaxOutputLength { get; init; } = 4 * 1024 * 1024;
}

/// <summary>
/// The limits' accounting for the render running on this thread. Work happens deep inside static helpers (repr,
/// equality, filters, string methods) that have no interpreter at hand; an ambient per-thread budget lets each of
/// them charge its work without threading a context through every signature. A render is synchronous on one thread
/// and restores the previous budget when it ends, so concurrent renders on other threads never share one.
/// </summary>
internal sealed class RenderBudget
{
    /// <summary>Characters of built text that cost one step.</summary>
    private const int CharsPerStep = 16;

    [ThreadStatic] private static RenderBudget? t_current;

    private readonly JinjaLimits _limits;
    private long _steps;
    private int _callDepth;

    private RenderBudget(JinjaLimits limits) => _limits = limits;

    /// <summary>The template line being rendered, for errors raised by helpers that do not know it.</summary>
    public static int Line => t_current?.CurrentLine ?? 0;

    private int CurrentLine { get; set; }

    /// <summary>Starts accounting for a render on this thread; dispose to end it.</summary>
    public static Scope Begin(JinjaLimits limits)
    {
        var previous = t_current;
        t_current = new RenderBudget(limits);
        return new Scope(previous);
    }

    public readonly struct Scope(RenderBudget? previous) : IDisposable
    {
        public void Dispose() => t_current = previous;
    }

    /// <summary>Records the line about to run and charges one step.</summary>
    public static void At(int line)
    {
        if (t_current is not { } b) return;
        if (line > 0) b.CurrentLine = line;
        b.Charge(1);
    }

    /// <summary>Charges <paramref name="steps"/> units of work.</summary>
    public static void Step(long steps = 1) => t_current?.Charge(steps);

    private void Charge(long steps)
    {
        _steps += steps;
        if (_steps > _limits.MaxSteps)
            throw Error(ErrorCodes.TemplateStepLimit,
                $"rendering took more than {Number(_limits.MaxSteps)} steps (JinjaLimits.MaxSteps): a loop or recursion runs too long. " +
                "Chat templates need far fewer; look for a loop over a huge range or a macro that never stops calling itself");
    }

    /// <summary>Charges for an operation that may read all of <paramref name="value"/>: a string costs one step per
    /// 16 characters (walking a list is charged where it is walked, item by item).</summary>
    public static void Touch(object? value)
    {
        if (value is string s && t_current is { } b) b.Charge(1 + s.Length / CharsPerStep);
    }

    /// <summary>Charges for looking for a string of <paramref name="needle"/> characters in one of
    /// <paramref name="haystack"/>: the worst case of a substring search compares every position against the needle.</summary>
    public static void Search(long haystack, long needle) => Step(1 + haystack * Math.Max(1, needle) / CharsPerStep);

    /// <summary>Checks (before building it) that a string or list of <paramref name="length"/> characters or items
    /// fits the output limit, and charges for building it.</summary>
    public static void Length(long length, string what)
    {
        Fits(length, what);
        Step(length / CharsPerStep);
    }

    /// <summary>Text grows by <paramref name="added"/> characters to <paramref name="total"/>: checks the total
    /// against the output limit and charges for the added part.</summary>
    public static void Grow(long total, long added, string what)
    {
        Fits(total, what);
        Step(added / CharsPerStep);
    }

    /// <summary>Checks that text growing to <paramref name="length"/> fits the output limit, without charging for
    /// it (the caller charges for the part it adds).</summary>
    public static void Fits(long length, string what)
    {
        if (t_current is not { } b) return;
        if (length > b._limits.MaxOutputLength)
            throw Error(ErrorCodes.TemplateOutputLimit,
                $"{what} would be {Number(length)} long, over the limit of {Number(b._limits.MaxOutputLength)} (JinjaLimits.MaxOutputLength). " +
                "Shorten the conversation, or check the template for a string or list that grows without bound");
    }

    /// <summary>Enters a macro call; dispose the result to leave it.</summary>
    public static CallScope EnterCall(string macro)
    {
        if (t_current is not { } b) return default;
        if (++b._callDepth > b._limits.MaxDepth)
        {
            b._callDepth--;
            throw Error(ErrorCodes.TemplateDepthLimit,
                $"macro '{macro}' is called more than {b._limits.MaxDepth} levels deep (JinjaLimits.MaxDepth): a recursion that does not end");
        }
        return new CallScope(b);
    }

    public readonly struct CallScope(RenderBudget? budget) : IDisposable
    {
        public void Dispose()
        {
            if (budget is not null) budget._callDepth--;
        }
    }

    /// <summary>Fails before the thread's stack runs out: deep values (a list nested a million levels) and deep
    /// recursion through macros and expressions are a coded error, not a crash of the process.</summary>
    public static void EnsureStack()
    {
        if (!RuntimeHelpers.TryEnsureSufficientExecutionStack())
            throw Error(ErrorCodes.TemplateDepthLimit,
                "the template nests values or calls too deeply for the thread's stack (JinjaLimits.MaxDepth bounds macro calls; values nest one level per step)");
    }

    private static LlmBuildException Error(string code, string message) => JinjaTemplate.Error(code, 0, message);

    internal static string Number(long n) => n.ToString("N0", CultureInfo.InvariantCulture);
}
