using LlmBuild.Core.Runtime;
using LlmBuild.Core.Tokenization.Chat;

namespace LlmBuild.Core.Serving;

/// <summary>
/// The emulator as a chat's token generator, one sequence in batch slot 0: what <c>llmbuild run</c> answers with, and
/// so the reference a served answer is checked against.
/// </summary>
public sealed class EmulatorTokenGenerator(LlmEmulator emulator, TokenSampler sampler) : ITokenGenerator
{
    public int Prefill(ReadOnlySpan<int> ids)
    {
        sampler.Reset();
        sampler.Observe(ids);
        // A UseHistoryKv model takes prompts longer than one chunk, prefilled chunk by chunk.
        return sampler.Next(emulator.PrefillChunked(ids));
    }

    public int Decode(int lastId) => sampler.Next(emulator.Decode(lastId));

    public void Reset()
    {
        emulator.Reset();
        sampler.Reset();
    }
}
