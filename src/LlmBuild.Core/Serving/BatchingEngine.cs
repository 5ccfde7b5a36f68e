using System.Diagnostics;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Runtime;

namespace LlmBuild.Core.Serving;

/// <summary>
/// Runs every generation on one loaded model with continuous batching: a thread of its own owns the emulator; a
/// request waits in a bounded first-come-first-served queue, joins a free KV-cache slot (one per Batch sequence) at
/// the next step with its own prefill, then decodes together with the other active slots — one batched decode pass
/// per step — and leaves its slot the step it ends or is cancelled. With Batch=1 requests run one at a time in
/// arrival order.
/// <para>Stopping rules are those of <c>llmbuild run</c> (ChatSession): an end-of-sequence id ends the generation
/// unwritten; after a written id, SeqLength (prompt plus generated) and max_tokens end it.</para>
/// </summary>
public sealed class BatchingEngine : IDisposable
{
    private readonly LlmEmulator _emulator;
    /// <summary>The decode step's [Batch, vocab] logits, one buffer for every step (the step loop runs one step at a time).</summary>
    private float[]? _logits;
    private readonly IReadOnlySet<int> _eosIds;
    private readonly object _gate = new();
    private readonly Queue<Generation> _waiting = new();
    private readonly ActiveSequence?[] _slots;
    private readonly Thread _thread;
    private bool _stopping;
    // Set by CancelAll: a cancelled generation then ends with LLMB0807 rather than as its requester's own cancel.
    private volatile bool _cancelAllRequested;
    // Seconds a finished generation took from admission to end, averaged; sizes the Retry-After of a full queue.
    private double _averageSeconds = 1;
    private int _prefills, _decodeSteps;
    private long _decodedTokens;
    private TimeSpan _prefillTime, _decodeTime;

    public BatchingEngine(LlmEmulator emulator, IReadOnlySet<int> eosIds, int queueCapacity)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(queueCapacity);
        _emulator = emulator;
        _eosIds = eosIds;
        QueueCapacity = queueCapacity;
        _slots = new ActiveSequence?[emulator.Batch];
        _thread = new Thread(Run) { IsBackground = true, Name = "llmbuild serve engine" };
        _thread.Start();
    }

    /// <summary>Sequences decoded together (the model's Batch).</summary>
    public int Slots => _slots.Length;

    /// <summary>Requests that may wait for a slot; one more is refused.</summary>
    public int QueueCapacity { get; }

    /// <summary>The longest prompt a prefill takes.</summary>
    public int MaxPromptTokens => Math.Min(_emulator.MaxPromptLength, _emulator.SeqLength - 1);

    public int SeqLength => _emulator.SeqLength;

    /// <summary>Where the engine's time went since it started: prefills, and decode steps with how many slots each carried.</summary>
    public sealed record Statistics(int Prefills, TimeSpan PrefillTime, int DecodeSteps, TimeSpan DecodeTime, long DecodedTokens);

    public Statistics Counters
    {
        get { lock (_gate) return new Statistics(_prefills, _prefillTime, _decodeSteps, _decodeTime, _decodedTokens); }
    }

    /// <summary>Busy slots and waiting requests, for /health.</summary>
    public (int Busy, int Waiting) Load
    {
        get { lock (_gate) return (_slots.Count(s => s is not null), _waiting.Count); }
    }

    /// <summary>
    /// Queues a generation; it starts when a slot is free. Refuses (LLMB0806, with the seconds to wait) when every slot is
    /// busy and the queue is full, and (LLMB0807) once the engine is stopping.
    /// </summary>
    public void Submit(Generation generation)
    {
        if (generation.PromptIds.Length > MaxPromptTokens)
            throw new LlmBuildException(ErrorCodes.PromptTooLong,
                $"The prompt is {generation.PromptIds.Length} tokens; the model accepts at most {MaxPromptTokens} (MaxInputLength/SeqLength). Shorten it or build with a larger MaxInputLength.");
        lock (_gate)
        {
            if (_stopping) throw new LlmBuildException(ErrorCodes.ServeShuttingDown, "The server is shutting down and takes no new requests.");
            int free = _slots.Count(s => s is null);
            if (_waiting.Count >= QueueCapacity + free) DropCancelledWaiting();
            if (_waiting.Count >= QueueCapacity + free)
                throw new QueueFullException(RetryAfterSeconds());
            _waiting.Enqueue(generation);
            Monitor.PulseAll(_gate);
        }
    }

    /// <summary>Requests whose clients left while they waited give their queue places back (under the lock).</summary>
    private void DropCancelledWaiting()
    {
        int count = _waiting.Count;
        for (int i = 0; i < count; i++)
        {
            var g = _waiting.Dequeue();
            if (g.IsCancelled) g.Finish(GenerationEnd.Cancelled);
            else _waiting.Enqueue(g);
        }
    }

    /// <summary>A full queue's refusal with the seconds after which a slot is likely free.</summary>
    public sealed class QueueFullException(int retryAfterSeconds) : Exception(
        $"{ErrorCodes.ServeQueueFull}: all batch slots are busy and the queue is full; retry in {retryAfterSeconds} s.")
    {
        public int RetryAfterSeconds { get; } = retryAfterSeconds;
    }

    private int RetryAfterSeconds() =>
        (int)Math.Clamp(Math.Ceiling(_averageSeconds * (_waiting.Count + 1) / _slots.Length), 1, 60);

    /// <summary>Takes no new requests; those already accepted (active or waiting) run on until <see cref="CancelAll"/>.</summary>
    public void StopAccepting()
    {
        lock (_gate)
        {
            _stopping = true;
            Monitor.PulseAll(_gate);
        }
    }

    /// <summary>Ends every accepted generation now with LLMB0807 (shutdown after the grace period).</summary>
    public void CancelAll()
    {
        lock (_gate)
        {
            _stopping = true;
            _cancelAllRequested = true;
            while (_waiting.TryDequeue(out var g))
                g.Fail(new LlmBuildException(ErrorCodes.ServeShuttingDown, "The server shut down before this request got a batch slot."));
            foreach (var s in _slots) s?.Generation.Cancel();
            Monitor.PulseAll(_gate);
        }
    }

    /// <summary>Waits until every accepted generation has ended (after <see cref="StopAccepting"/>).</summary>
    public bool WaitIdle(TimeSpan timeout)
    {
        var clock = Stopwatch.StartNew();
        lock (_gate)
        {
            while (_slots.Any(s => s is not null) || _waiting.Count > 0)
            {
                var left = timeout - clock.Elapsed;
                if (left <= TimeSpan.Zero) return false;
                Monitor.Wait(_gate, left);
            }
            return true;
        }
    }

    public void Dispose()
    {
        CancelAll();
        _thread.Join();
    }

    private sealed class ActiveSequence(Generation generation, TokenSampler sampler)
    {
        public Generation Generation { get; } = generation;
        public TokenSampler Sampler { get; } = sampler;
        public Stopwatch Clock { get; } = Stopwatch.StartNew();
        /// <summary>The id the next decode step feeds (the last one written).</summary>
        public int Next { get; set; }
    }

    private void Run()
    {
        var admitted = new List<int>();
        while (true)
        {
            admitted.Clear();
            lock (_gate)
            {
                while (!_slots.Any(s => s is not null) && _waiting.Count == 0)
                {
                    if (_stopping) return;
                    Monitor.Wait(_gate);
                }
                for (int slot = 0; slot < _slots.Length && _waiting.Count > 0; slot++)
                {
                    if (_slots[slot] is not null) continue;
                    // A request whose client left while it waited never takes a slot.
                    Generation? next = null;
                    while (_waiting.TryDequeue(out var g))
                    {
                        if (!g.IsCancelled) { next = g; break; }
                        g.Finish(GenerationEnd.Cancelled);
                    }
                    if (next is null) break;
                    var settings = next.Settings;
                    _slots[slot] = new ActiveSequence(next, new TokenSampler(settings.Sampling, settings.Seed));
                    admitted.Add(slot);
                }
            }
            foreach (int slot in admitted) Prefill(slot);
            EndCancelled();
            DecodeStep();
        }
    }

    private void Prefill(int slot)
    {
        var s = _slots[slot]!;
        try
        {
            s.Sampler.Observe(s.Generation.PromptIds);
            long start = Stopwatch.GetTimestamp();
            float[] logits = _emulator.PrefillChunked(s.Generation.PromptIds, slot: slot);
            lock (_gate)
            {
                _prefills++;
                _prefillTime += Stopwatch.GetElapsedTime(start);
            }
            Accept(slot, s.Sampler.Next(logits));
        }
        catch (Exception e)
        {
            Release(slot, Failure(e));
        }
    }

    private void EndCancelled()
    {
        for (int slot = 0; slot < _slots.Length; slot++)
            if (_slots[slot] is { } s && s.Generation.IsCancelled)
            {
                if (_cancelAllRequested) Release(slot, new LlmBuildException(ErrorCodes.ServeShuttingDown, "The server shut down during this generation."));
                else Release(slot, GenerationEnd.Cancelled);
            }
    }

    /// <summary>One decode pass over every active slot (idle slots keep their caches), then one sampled id each.</summary>
    private void DecodeStep()
    {
        int batch = _slots.Length;
        var ids = new int[batch];
        var active = new bool[batch];
        for (int slot = 0; slot < batch; slot++)
            if (_slots[slot] is { } s)
            {
                ids[slot] = s.Next;
                active[slot] = true;
            }
        if (!active.Contains(true)) return;
        float[] logits = _logits ??= new float[(long)batch * _emulator.VocabSize];
        try
        {
            long start = Stopwatch.GetTimestamp();
            _emulator.DecodeBatch(ids, active, logits);
            lock (_gate)
            {
                _decodeSteps++;
                _decodeTime += Stopwatch.GetElapsedTime(start);
                _decodedTokens += active.Count(a => a);
            }
        }
        catch (Exception e)
        {
            for (int slot = 0; slot < batch; slot++) if (active[slot]) Release(slot, Failure(e));
            return;
        }
        int vocab = _emulator.VocabSize;
        for (int slot = 0; slot < batch; slot++)
            if (active[slot]) Accept(slot, _slots[slot]!.Sampler.Next(logits.AsSpan(slot * vocab, vocab)));
    }

    /// <summary>Writes a sampled id (or ends at end-of-sequence) and applies SeqLength and max_tokens.</summary>
    private void Accept(int slot, int id)
    {
        var s = _slots[slot]!;
        var g = s.Generation;
        if (_eosIds.Contains(id) && !g.Settings.IgnoreEos) { Release(slot, GenerationEnd.EndOfSequence); return; }
        g.Write(id);
        s.Next = id;
        if (g.PromptIds.Length + g.Generated >= _emulator.SeqLength) Release(slot, GenerationEnd.SeqLength);
        else if (g.Settings.MaxNewTokens is int max && g.Generated >= max) Release(slot, GenerationEnd.MaxTokens);
    }

    /// <summary>A runtime failure as the requests see it: coded errors as they are, anything else as LLMB0808.</summary>
    private static LlmBuildException Failure(Exception e) => e as LlmBuildException
        ?? new LlmBuildException(ErrorCodes.ServeGenerationFailed, $"The generation failed in the runtime: {e.GetType().Name}: {e.Message}", inner: e);

    private void Release(int slot, GenerationEnd end) => Release(slot, end, null);

    private void Release(int slot, LlmBuildException error) => Release(slot, null, error);

    private void Release(int slot, GenerationEnd? end, LlmBuildException? error)
    {
        var s = _slots[slot]!;
        if (error is not null) s.Generation.Fail(error);
        else s.Generation.Finish(end!.Value);
        lock (_gate)
        {
            _slots[slot] = null;
            _averageSeconds = 0.8 * _averageSeconds + 0.2 * s.Clock.Elapsed.TotalSeconds;
            Monitor.PulseAll(_gate);
        }
    }
}
