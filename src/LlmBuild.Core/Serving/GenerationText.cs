using LlmBuild.Core.Tokenization;

namespace LlmBuild.Core.Serving;

/// <summary>How a completion choice ended, in OpenAI's words: "stop" (end of sequence or a stop sequence) or "length".</summary>
public sealed record CompletionOutcome(string FinishReason, int CompletionTokens);

/// <summary>
/// Turns a generation's ids into the text a client sees: whole characters only (a character split over tokens waits
/// for its last byte), stop sequences applied, and the generation cancelled as soon as one matches.
/// </summary>
public static class GenerationText
{
    /// <summary>
    /// Reads the generation to its end, passing each piece of final text to <paramref name="onText"/>. Cancelling
    /// <paramref name="cancellation"/> (the client left) cancels the generation; so does leaving early for any reason.
    /// </summary>
    public static async Task<CompletionOutcome> ReadAsync(Generation generation, Tokenizer tokenizer, IReadOnlyList<string> stop,
        Func<string, Task> onText, CancellationToken cancellation)
    {
        var decoder = tokenizer.CreateStreamingDecoder(skipSpecialTokens: true);
        var stops = new StopSequences(stop);
        int consumed = 0;
        try
        {
            await foreach (int id in generation.Tokens.ReadAllAsync(cancellation))
            {
                consumed++;
                string piece = decoder.Push(id);
                if (piece.Length == 0) continue;
                if (await Emit(stops.Push(piece), onText)) return new CompletionOutcome("stop", consumed);
            }
            if (await Emit(stops.Push(decoder.Flush()), onText)) return new CompletionOutcome("stop", consumed);
            string held = stops.Flush();
            if (held.Length > 0) await onText(held);
            return new CompletionOutcome(generation.End == GenerationEnd.EndOfSequence ? "stop" : "length", consumed);
        }
        finally
        {
            generation.Cancel();
        }
    }

    private static async Task<bool> Emit((string Text, bool Stopped) result, Func<string, Task> onText)
    {
        if (result.Text.Length > 0) await onText(result.Text);
        return result.Stopped;
    }
}
