using System.Threading.Channels;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Runtime;

namespace LlmBuild.Core.Serving;

/// <summary>Why a generation ended, as the engine sees it (stop sequences are the text layer's business).</summary>
public enum GenerationEnd
{
    /// <summary>The model produced an end-of-sequence id.</summary>
    EndOfSequence,
    /// <summary>max_tokens was reached.</summary>
    MaxTokens,
    /// <summary>Prompt plus generated tokens filled SeqLength.</summary>
    SeqLength,
    /// <summary>The requester cancelled (a stop sequence matched, or the client went away).</summary>
    Cancelled,
}

/// <summary>
/// How to pick tokens for one request: greedy when <see cref="Sampling"/> is null; <see cref="IgnoreEos"/> generates
/// through end-of-sequence ids (vLLM's and llama-server's ignore_eos, for load tests and fixed-length answers).
/// </summary>
public sealed record GenerationSettings(SamplingOptions? Sampling, int Seed, int? MaxNewTokens, bool IgnoreEos = false);

/// <summary>
/// One request's generation as the engine runs it: the prompt, a channel of generated ids (end-of-sequence ids are
/// not written), and how it ended. The requester reads <see cref="Tokens"/> and calls <see cref="Cancel"/> when it
/// wants no more; the engine frees the batch slot at its next step.
/// </summary>
public sealed class Generation
{
    private readonly Channel<int> _tokens = Channel.CreateUnbounded<int>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
    private readonly CancellationTokenSource _cancel = new();

    public Generation(int[] promptIds, GenerationSettings settings)
    {
        if (promptIds.Length == 0) throw new ArgumentException("A generation needs at least one prompt id.", nameof(promptIds));
        PromptIds = promptIds;
        Settings = settings;
    }

    public int[] PromptIds { get; }
    public GenerationSettings Settings { get; }

    /// <summary>The generated ids, completed when the generation ends (with the engine's error if it failed).</summary>
    public ChannelReader<int> Tokens => _tokens.Reader;

    /// <summary>How it ended; set before <see cref="Tokens"/> completes.</summary>
    public GenerationEnd? End { get; private set; }

    public bool IsCancelled => _cancel.IsCancellationRequested;

    /// <summary>Asks the engine to stop this generation (and leave the queue if it still waits); safe to call at any time.</summary>
    public void Cancel() => _cancel.Cancel();

    internal CancellationToken CancellationToken => _cancel.Token;

    /// <summary>Ids written so far; the engine's own count, for its SeqLength and max_tokens checks.</summary>
    internal int Generated { get; private set; }

    internal void Write(int id)
    {
        Generated++;
        _tokens.Writer.TryWrite(id);
    }

    internal void Finish(GenerationEnd end)
    {
        End ??= end;
        _tokens.Writer.TryComplete();
    }

    internal void Fail(LlmBuildException error) => _tokens.Writer.TryComplete(error);
}
