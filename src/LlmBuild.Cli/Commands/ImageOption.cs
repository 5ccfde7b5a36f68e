using System.CommandLine;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Runtime;
using LlmBuild.Core.Tokenization;

namespace LlmBuild.Cli.Commands;

/// <summary>The <c>--image F</c> option of run, logits and reference-logits, and what they share to use it.</summary>
public static class ImageOption
{
    public static Option<string[]> Create(string description) =>
        new("--image") { Description = description, Arity = ArgumentArity.ZeroOrMore, AllowMultipleArgumentsPerToken = false };

    /// <summary>Encodes the images with the model's vit net, printing each resize warning and the encode time.</summary>
    public static ImagePrompt Encode(LlmEmulator emulator, string configDir, IReadOnlyList<string> paths)
    {
        var warnings = new List<LlmBuildWarning>();
        ImagePrompt images = ImagePrompt.Encode(emulator, configDir, paths, warnings);
        foreach (var w in warnings) Console.Error.WriteLine($"warning {w}");
        Console.Error.WriteLine(string.Create(System.Globalization.CultureInfo.InvariantCulture,
            $"{paths.Count} image(s): {string.Join(", ", images.Images.Select((i, n) => $"{i.Width}×{i.Height} px, {images.TokensOf(n)} tokens"))}; vit {images.EncodeSeconds:0.000} s"));
        return images;
    }

    /// <summary>What Qwen2-VL's chat template writes for each image of a message: &lt;|vision_start|&gt;&lt;|image_pad|&gt;&lt;|vision_end|&gt;.</summary>
    public static string Placeholders(Tokenizer tokenizer, ImagePrompt images)
    {
        var v = images.Vision;
        string one = tokenizer.Decode([v.VisionStartTokenId, v.ImageTokenId]) + (v.VisionEndTokenId >= 0 ? tokenizer.Decode([v.VisionEndTokenId]) : "");
        return string.Concat(Enumerable.Repeat(one, images.Images.Count));
    }
}
