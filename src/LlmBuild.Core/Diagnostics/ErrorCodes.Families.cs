namespace LlmBuild.Core.Diagnostics;

public static partial class ErrorCodes
{
    [Code("A multimodal checkpoint's vision tower and projector are not built: only its language model is (a warning listing the ignored tensors).")]
    public const string VisionTowerIgnored = "LLMB0160";
    [Code("ChatGLM's own tokenizer (tokenizer.model for the remote tokenization_chatglm.py: SentencePiece in ChatGLM3, tiktoken ranks in GLM-4) is not read; the config folder needs a tokenizer.json.")]
    public const string ChatGlmTokenizerModel = "LLMB0650";
}
