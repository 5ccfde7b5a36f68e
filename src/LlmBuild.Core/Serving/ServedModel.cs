using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Runtime;
using LlmBuild.Core.Tokenization;

namespace LlmBuild.Core.Serving;

/// <summary>
/// The one model a server loads: the built bmodel on the emulator, its tokenizer and chat template from config/,
/// and generation_config.json's sampling defaults. Every request shares it.
/// </summary>
public sealed class ServedModel : IDisposable
{
    private ServedModel(string name, LlmEmulator emulator, Tokenizer tokenizer, ChatTemplate? template, SamplingOptions sampling)
    {
        Name = name;
        Emulator = emulator;
        Tokenizer = tokenizer;
        Template = template;
        DefaultSampling = sampling;
    }

    /// <summary>Loads <paramref name="bmodelPath"/> with its config folder (default: config/ beside it).</summary>
    public static ServedModel Load(string bmodelPath, string? configDir = null, string? name = null)
    {
        string config = configDir ?? Path.Combine(Path.GetDirectoryName(Path.GetFullPath(bmodelPath))!, "config");
        var tokenizer = Tokenizer.Load(config);
        // A model without a chat template still serves /v1/completions; chat requests are then refused.
        ChatTemplate? template = LoadTemplateIfAny(config);
        var sampling = SamplingOptions.FromGenerationConfig(config);
        var emulator = LlmEmulator.Load(bmodelPath, config);
        return new ServedModel(name ?? Path.GetFileNameWithoutExtension(bmodelPath), emulator, tokenizer, template, sampling);
    }

    private static ChatTemplate? LoadTemplateIfAny(string configDir)
    {
        try
        {
            return ChatTemplate.Load(configDir);
        }
        catch (LlmBuildException e) when (e.Code == ErrorCodes.ChatTemplateNotFound)
        {
            return null;
        }
    }

    /// <summary>The id clients name it by (default: the bmodel's file name without extension).</summary>
    public string Name { get; }
    public LlmEmulator Emulator { get; }
    public Tokenizer Tokenizer { get; }
    public ChatTemplate? Template { get; }
    /// <summary>generation_config.json's temperature, top_k, top_p and repetition_penalty; a request overrides them.</summary>
    public SamplingOptions DefaultSampling { get; }

    public void Dispose() => Emulator.Dispose();
}
