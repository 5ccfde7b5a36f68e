namespace LlmBuild.Core.Diagnostics;

public static partial class ErrorCodes
{
    [Code("A multimodal checkpoint's vision tower and projector are not built: only its language model is (a warning listing the ignored tensors).")]
    public const string VisionTowerIgnored = "LLMB0160";
    [Code("GLM-4's own tokenizer (tokenizer.model as tiktoken ranks, for its remote tokenization_chatglm.py) is not read; the config folder needs a tokenizer.json.")]
    public const string ChatGlmTokenizerModel = "LLMB0650";
}
