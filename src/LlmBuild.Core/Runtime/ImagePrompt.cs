using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Models;

namespace LlmBuild.Core.Runtime;

/// <summary>
/// Images of one prompt, encoded by a built model's vit net (one run per image, each within MaxPixels): their grids, their
/// merged embeddings in prompt order, and the expansion of the chat template's single &lt;|image_pad|&gt; per image into
/// the image's token count (as Hugging Face's processor expands it).
/// </summary>
public sealed class ImagePrompt
{
    private ImagePrompt(VisionConfig vision, IReadOnlyList<PreprocessedImage> images, float[] embeds)
    {
        Vision = vision;
        Images = images;
        Embeds = embeds;
    }

    public VisionConfig Vision { get; }
    public IReadOnlyList<PreprocessedImage> Images { get; }
    public IReadOnlyList<(int T, int H, int W)> Grids => Images.Select(i => i.Grid).ToArray();
    /// <summary>[Σ tokens, hidden]: every image's embeddings, in order.</summary>
    public float[] Embeds { get; }
    /// <summary>Seconds the vit runs took, all images together.</summary>
    public double EncodeSeconds { get; private init; }

    /// <summary>
    /// Preprocesses and encodes <paramref name="paths"/> with the model's vit net; <paramref name="configDir"/> holds
    /// config.json and preprocessor_config.json.
    /// </summary>
    public static ImagePrompt Encode(LlmEmulator emulator, string configDir, IReadOnlyList<string> paths, ICollection<LlmBuildWarning>? warnings = null)
    {
        VisionConfig vision = ModelConfig.Load(configDir).Vision
            ?? throw new LlmBuildException(ErrorCodes.ImagePromptMismatch, $"The model in '{configDir}' is not a vision-language model; it takes no images.");
        if (!emulator.HasVision)
            throw new LlmBuildException(ErrorCodes.ImagePromptMismatch, "The bmodel has no vit net; rebuild it from the vision-language checkpoint.");
        var pre = ImagePreprocessor.Load(configDir, vision, (long)emulator.VitPatches * vision.PatchSize * vision.PatchSize);
        var images = paths.Select(p => pre.Process(p, warnings)).ToArray();
        var clock = System.Diagnostics.Stopwatch.StartNew();
        float[] embeds = images.SelectMany(i => emulator.EncodeImage(VisionInputs.Prepare(i.PixelValues, i.Grid, vision, emulator.VitPatches))).ToArray();
        return new ImagePrompt(vision, images, embeds) { EncodeSeconds = clock.Elapsed.TotalSeconds };
    }

    /// <summary>The merged image tokens image <paramref name="index"/> takes.</summary>
    public int TokensOf(int index) => Images[index].Tokens(Vision);

    /// <summary>
    /// Replaces the i-th single image-pad token of <paramref name="ids"/> (the chat template's placeholder) by image i's
    /// token count of image-pad tokens; the placeholders must be as many as the images.
    /// </summary>
    public int[] Expand(ReadOnlySpan<int> ids)
    {
        var result = new List<int>(ids.Length + Embeds.Length / Vision.OutHiddenSize);
        int image = 0;
        foreach (int id in ids)
        {
            if (id != Vision.ImageTokenId) { result.Add(id); continue; }
            if (image >= Images.Count)
                throw new LlmBuildException(ErrorCodes.ImagePromptMismatch, $"The prompt has more image placeholders than the {Images.Count} image(s) given.");
            result.AddRange(Enumerable.Repeat(Vision.ImageTokenId, TokensOf(image++)));
        }
        if (image != Images.Count)
            throw new LlmBuildException(ErrorCodes.ImagePromptMismatch, $"The prompt has {image} image placeholder(s) for {Images.Count} image(s).");
        return result.ToArray();
    }

    /// <summary>The 3-component positions of an expanded prompt.</summary>
    public MropePositions Positions(ReadOnlySpan<int> expandedIds) => MropePositions.Compute(expandedIds, Grids, Vision);
}
