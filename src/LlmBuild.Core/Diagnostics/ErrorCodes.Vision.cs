namespace LlmBuild.Core.Diagnostics;

public static partial class ErrorCodes
{
    [Code("config.json's `vision_config` of a vision-language family is missing, lacks a field the vision tower needs, or holds a value the build does not implement.")]
    public const string BadVisionConfig = "LLMB0140";
    [Code("MaxPixels is not a multiple of the family's pixel unit (28×28 for Qwen2-VL / Qwen2.5-VL) or gives no whole merge window of patches.")]
    public const string BadMaxPixels = "LLMB0141";
    [Code("A vision-language model is built with an option its image path does not support yet (Batch > 1, NumDevice > 1, Dynamic, SharePrompt, UseHistoryKv, EmbeddingDisk).")]
    public const string VisionUnsupportedOption = "LLMB0142";
    [Code("An image cannot be decoded (corrupt, truncated or an unsupported format), or is too small or too large to preprocess.")]
    public const string BadImage = "LLMB0143";
    [Code("An image is larger than the model's MaxPixels and is resized down to fit (warning).")]
    public const string ImageResized = "LLMB0144";
    [Code("The images do not fit the prompt or the model: more image tokens than MaxPixels allows in one vit run, the image-pad count in the ids does not match the images, or the model has no vit net.")]
    public const string ImagePromptMismatch = "LLMB0145";
    [Code("preprocessor_config.json is missing or holds a value the host preprocessing does not implement.")]
    public const string BadPreprocessorConfig = "LLMB0146";
}
