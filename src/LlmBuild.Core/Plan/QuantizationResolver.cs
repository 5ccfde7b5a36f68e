using LlmBuild.Core.Checkpoints;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Models;

namespace LlmBuild.Core.Plan;

/// <summary>
/// Decides the Quantize mode, activation dtype and weight scheme from the user's request and the checkpoint:
/// "auto" follows quantization_config (w4/w8 with the source's group size and symmetry) or else torch_dtype
/// (bfloat16 → bf16, float16 → f16, float32 → bf16). A forced mode that contradicts the source is a coded warning
/// when the weights can be converted (dtype change, dequantizing a pre-quantized source, a group size overridden
/// by the source's) and a coded error when they cannot (another bit width than the pre-quantized source's).
/// Block-wise FP8 checkpoints read as floats (their scales folded in); auto picks w8 for them.
/// </summary>
public static class QuantizationResolver
{
    public static (string Quantize, string ActivationDtype, QuantScheme Scheme) Resolve(
        ModelConfig config, string requestedQuantize, int groupSize, bool symmetric, ICollection<LlmBuildWarning> warnings)
    {
        string requested = requestedQuantize.Trim().ToLowerInvariant();
        if (!BuildOptions.QuantizeModes.Contains(requested))
            throw new LlmBuildException(ErrorCodes.InvalidProperty,
                $"Property Quantize='{requestedQuantize}' is invalid: expected one of {string.Join(", ", BuildOptions.QuantizeModes)}.");
        var source = PreQuantizedFormat.FromConfig(config.QuantizationConfig, "config.json quantization_config");
        string sourceActivation = config.TorchDtype switch
        {
            "float16" => "f16",
            "bfloat16" => "bf16",
            // float32 checkpoints (and GPTQ/AWQ ones saved as float32) run in bf16: its range matches f32.
            _ => "bf16",
        };

        // Block-wise FP8 weights are dequantized when read; auto keeps 8 bits (the closest A16MatMul mode).
        if (requested == "auto" && PreQuantizedFormat.IsFp8(config.QuantizationConfig, "config.json quantization_config"))
        {
            return ($"w8{sourceActivation}", sourceActivation, new QuantScheme(8, groupSize, symmetric));
        }
        if (requested == "auto")
        {
            if (source is null) return (sourceActivation, sourceActivation, new QuantScheme(16, 0, false));
            string mode = $"w{source.Bits}{sourceActivation}";
            return (mode, sourceActivation, new QuantScheme(source.Bits, source.GroupSize, source.Symmetric));
        }

        int bits = requested.StartsWith("w8", StringComparison.Ordinal) ? 8 : requested.StartsWith("w4", StringComparison.Ordinal) ? 4 : 16;
        // f32 (-q f32): float32 weights and activations end to end; widening a bf16/f16 checkpoint loses nothing.
        string activation = requested == "f32" ? "f32"
            : requested.EndsWith("f16", StringComparison.Ordinal) && !requested.EndsWith("bf16", StringComparison.Ordinal) ? "f16" : "bf16";

        if (config.TorchDtype is "bfloat16" or "float16" && activation != sourceActivation && activation != "f32")
            warnings.Add(new LlmBuildWarning(ErrorCodes.QuantizeDtypeDiffers,
                $"Quantize={requested} computes in {activation} but the checkpoint's torch_dtype is {config.TorchDtype}; weights are converted" +
                (activation == "f16" ? " and values beyond ±65504 overflow to infinity." : " with bf16's shorter mantissa.") +
                $" Use Quantize=auto or a *{sourceActivation} mode to keep the checkpoint's precision."));

        if (source is null)
        {
            return (requested, activation, bits < 16 ? new QuantScheme(bits, groupSize, symmetric) : new QuantScheme(16, 0, false));
        }

        if (bits == 16)
        {
            warnings.Add(new LlmBuildWarning(ErrorCodes.QuantizeDtypeDiffers,
                $"The checkpoint is pre-quantized ({source.Method}, {source.Bits} bits) but Quantize={requested}: its weights are dequantized to {activation}, " +
                $"which makes the model larger without improving accuracy. Use Quantize=auto or w{source.Bits}{activation}."));
            return (requested, activation, new QuantScheme(16, 0, false));
        }
        // A GGUF file's blocks dequantize exactly, so another bit width is a plain requantization (logged as LLMB0210).
        if (bits != source.Bits && source.Method == PreQuantizedMethod.Gguf)
        {
            return (requested, activation, new QuantScheme(bits, groupSize, symmetric));
        }
        if (bits != source.Bits)
            throw new LlmBuildException(ErrorCodes.QuantizeConflictsWithSource,
                $"Quantize={requested} asks for {bits}-bit weights but the checkpoint is pre-quantized by {source.Method} with {source.Bits} bits; " +
                $"re-quantizing quantized weights would lose accuracy. Use Quantize=auto or w{source.Bits}{activation}, or start from the unquantized model.");
        if (groupSize != source.GroupSize && groupSize.ToString(System.Globalization.CultureInfo.InvariantCulture) != OptionTable.QGroupSize.Default)
            warnings.Add(new LlmBuildWarning(ErrorCodes.QuantizeDtypeDiffers,
                $"QGroupSize={groupSize} is ignored: the pre-quantized checkpoint's weights are grouped by {(source.GroupSize == 0 ? "channel" : source.GroupSize.ToString(System.Globalization.CultureInfo.InvariantCulture))}."));
        return (requested, activation, new QuantScheme(source.Bits, source.GroupSize, source.Symmetric));
    }
}
