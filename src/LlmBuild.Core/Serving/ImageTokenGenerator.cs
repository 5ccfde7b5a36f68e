using LlmBuild.Core.Runtime;
using LlmBuild.Core.Tokenization.Chat;

namespace LlmBuild.Core.Serving;

/// <summary>
/// The emulator with images: each prefill places the images' embeddings at the prompt's image-pad tokens with M-RoPE
/// positions (the prompt already expanded by <see cref="ImagePrompt.Expand"/>); decoding continues as text.
/// </summary>
public sealed class ImageTokenGenerator(LlmEmulator emulator, TokenSampler sampler, ImagePrompt images) : ITokenGenerator
{
    public int Prefill(ReadOnlySpan<int> ids)
    {
        sampler.Reset();
        sampler.Observe(ids);
        return sampler.Next(emulator.Prefill(ids, images.Positions(ids), images.Embeds, images.Vision.ImageTokenId));
    }

    public int Decode(int lastId) => sampler.Next(emulator.Decode(lastId));

    public void Reset()
    {
        emulator.Reset();
        sampler.Reset();
    }
}
