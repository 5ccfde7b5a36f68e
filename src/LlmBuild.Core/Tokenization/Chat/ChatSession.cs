using System.Diagnostics;
using LlmBuild.Core.Diagnostics;

namespace LlmBuild.Core.Tokenization.Chat;

/// <summary>
/// What a chat needs from a model runtime: prefill a prompt (from an empty KV cache) and return the first generated
/// id; decode one more id given the previous one; forget the cache. Sampling is the generator's business.
/// </summary>
public interface ITokenGenerator
{
    int Prefill(ReadOnlySpan<int> ids);
    int Decode(int lastId);
    void Reset();
}

public sealed record ChatSessionOptions
{
    /// <summary>The model's SeqLength: prompt plus generated tokens never exceed it.</summary>
    public required int SeqLength { get; init; }

    /// <summary>The longest prompt the prefill accepts (MaxInputLength); defaults to SeqLength - 1.</summary>
    public int? MaxInputLength { get; init; }

    /// <summary>A system message put first in every rendering (omitted when null).</summary>
    public string? SystemPrompt { get; init; }

    /// <summary>Stop after this many generated tokens (null: only EOS and SeqLength stop).</summary>
    public int? MaxNewTokens { get; init; }

    /// <summary>Extra chat-template variables (enable_thinking, ...).</summary>
    public IReadOnlyDictionary<string, object?>? TemplateVariables { get; init; }

    /// <summary>Rewrites the rendered prompt's ids before they are counted and prefilled (vision-language models expand
    /// each image placeholder into the image's tokens); null leaves them as they are.</summary>
    public Func<int[], int[]>? ExpandPrompt { get; init; }
}

public enum ChatStopReason { EndOfSequence, SeqLengthReached, MaxNewTokens, Cancelled }

/// <summary>One answered turn, with the board demos' figures: first-token latency (the prefill) and decode speed.</summary>
public sealed record ChatTurn(
    string Text,
    int PromptTokens,
    int GeneratedTokens,
    TimeSpan FirstTokenLatency,
    double TokensPerSecond,
    ChatStopReason StopReason,
    bool HistoryDroppedBeforeTurn,
    bool HistoryClearedAfterTurn);

/// <summary>
/// A multi-turn chat like LLM-TPU's demos: keeps the history, renders it with the model's chat template, prefills
/// the whole conversation each turn, streams decoded text (never half a character), stops at every EOS id, and
/// starts over (history dropped) when the conversation no longer fits the model's input length or SeqLength.
/// </summary>
public sealed class ChatSession
{
    private readonly Tokenizer _tokenizer;
    private readonly ChatTemplate _template;
    private readonly ITokenGenerator _generator;
    private readonly ChatSessionOptions _options;
    private readonly List<ChatMessage> _history = [];

    public ChatSession(Tokenizer tokenizer, ChatTemplate template, ITokenGenerator generator, ChatSessionOptions options)
    {
        if (options.SeqLength < 2) throw new ArgumentOutOfRangeException(nameof(options), "SeqLength must be at least 2.");
        _tokenizer = tokenizer;
        _template = template;
        _generator = generator;
        _options = options;
    }

    /// <summary>The conversation so far (user and assistant turns, without the system prompt).</summary>
    public IReadOnlyList<ChatMessage> History => _history;

    private int MaxInput => Math.Min(_options.MaxInputLength ?? _options.SeqLength - 1, _options.SeqLength - 1);

    public void Clear() => _history.Clear();

    /// <summary>The prompt ids for the history plus <paramref name="userText"/>, as the next turn would prefill them.</summary>
    public int[] PromptIds(string userText, bool withHistory = true)
    {
        var messages = new List<ChatMessage>();
        if (_options.SystemPrompt is { } system) messages.Add(new ChatMessage("system", system));
        if (withHistory) messages.AddRange(_history);
        messages.Add(new ChatMessage("user", userText));
        string prompt = _template.Render(messages, addGenerationPrompt: true, _options.TemplateVariables);
        int[] ids = _tokenizer.Encode(prompt, addSpecialTokens: false);
        return _options.ExpandPrompt is { } expand ? expand(ids) : ids;
    }

    /// <summary>Answers one user message; <paramref name="onText"/> receives the reply as it is generated.</summary>
    public ChatTurn Ask(string userText, Action<string>? onText = null, CancellationToken cancellation = default)
    {
        int[] ids = PromptIds(userText);
        bool dropped = false;
        if (ids.Length > MaxInput && _history.Count > 0)
        {
            _history.Clear();
            dropped = true;
            ids = PromptIds(userText);
        }
        if (ids.Length > MaxInput)
            throw new LlmBuildException(ErrorCodes.PromptTooLong,
                $"The prompt is {ids.Length} tokens; the model accepts at most {MaxInput} (MaxInputLength/SeqLength). Shorten it or build with a larger MaxInputLength.");

        var stream = _tokenizer.CreateStreamingDecoder(skipSpecialTokens: true);
        var generated = new List<int>();
        _generator.Reset();
        var clock = Stopwatch.StartNew();
        int token = _generator.Prefill(ids);
        TimeSpan firstToken = clock.Elapsed;
        ChatStopReason reason;
        while (true)
        {
            if (_tokenizer.EosIds.Contains(token)) { reason = ChatStopReason.EndOfSequence; break; }
            generated.Add(token);
            string text = stream.Push(token);
            if (text.Length > 0) onText?.Invoke(text);
            if (ids.Length + generated.Count >= _options.SeqLength) { reason = ChatStopReason.SeqLengthReached; break; }
            if (_options.MaxNewTokens is int max && generated.Count >= max) { reason = ChatStopReason.MaxNewTokens; break; }
            if (cancellation.IsCancellationRequested) { reason = ChatStopReason.Cancelled; break; }
            token = _generator.Decode(token);
        }
        TimeSpan total = clock.Elapsed;
        string rest = stream.Flush();
        if (rest.Length > 0) onText?.Invoke(rest);

        double decodeSeconds = (total - firstToken).TotalSeconds;
        double tps = generated.Count > 1 && decodeSeconds > 0 ? (generated.Count - 1) / decodeSeconds : 0;
        string answer = _tokenizer.Decode(generated.ToArray(), skipSpecialTokens: true);
        bool cleared = reason == ChatStopReason.SeqLengthReached;
        if (cleared) _history.Clear();
        else
        {
            _history.Add(new ChatMessage("user", userText));
            _history.Add(new ChatMessage("assistant", answer));
        }
        return new ChatTurn(answer, ids.Length, generated.Count, firstToken, tps, reason, dropped, cleared);
    }
}
