using LlmBuild.Core.Plan;

namespace LlmBuild.Core.Codegen;

/// <summary>
/// The tpu-mlir backend's command line: the model_deploy.py arguments llm_convert.py uses for each kind of piece
/// (quantize mode, group size, --quant_input/--quant_output, --addr_mode io_alone for decode blocks, --high_precision,
/// --q_symmetric, num_core/num_device, --dynamic for dynamic prefill nets).
/// </summary>
public static class TpuMlirCommand
{
    public const string ToolName = "model_deploy.py";

    public static IReadOnlyList<string> Arguments(ResolvedModel model, Piece piece, string mlirPath, string bmodelPath)
    {
        var o = model.Options;
        string half = model.ActivationDtype.ToUpperInvariant();
        string quantize = model.Quantize.ToUpperInvariant();
        var args = new List<string> { "--mlir", mlirPath };
        void Common(bool quantInput, bool quantOutput)
        {
            if (quantInput) args.Add("--quant_input");
            if (quantOutput) args.Add("--quant_output");
            args.AddRange(["--chip", o.Chip, "--num_core", NumCore(model).ToString(System.Globalization.CultureInfo.InvariantCulture),
                "--num_device", o.NumDevice.ToString(System.Globalization.CultureInfo.InvariantCulture)]);
        }
        void Quantized()
        {
            args.AddRange(["--quantize", quantize]);
            if (model.Weights.IsQuantized) args.AddRange(["--q_group_size", model.Weights.GroupSize.ToString(System.Globalization.CultureInfo.InvariantCulture)]);
        }
        switch (piece.Kind)
        {
            case PieceKind.Embedding or PieceKind.EmbeddingCache or PieceKind.EmbeddingLora or PieceKind.EmbeddingCacheLora:
                args.AddRange(["--quantize", half]);
                Common(quantInput: false, quantOutput: true);
                if (o.Dynamic && piece.Kind == PieceKind.Embedding) args.Add("--dynamic");
                break;
            case PieceKind.Block or PieceKind.BlockPrompt:
                Quantized();
                Common(quantInput: true, quantOutput: true);
                HighPrecision();
                if (o.Dynamic) args.Add("--dynamic");
                break;
            case PieceKind.BlockCache or PieceKind.BlockKv:
                Quantized();
                Common(quantInput: true, quantOutput: true);
                args.AddRange(["--addr_mode", "io_alone"]);
                HighPrecision();
                break;
            case PieceKind.LmHead or PieceKind.LmHeadLora:
                if (model.QuantizeLmHead) Quantized();
                else args.AddRange(["--quantize", half]);
                Common(quantInput: true, quantOutput: false);
                break;
            case PieceKind.Vit:
                // The tower compiles in float (as llm_convert does) unless QuantizeVit; its f32 patches stay f32 inputs.
                if (model.QuantizeVit) Quantized();
                else args.AddRange(["--quantize", half]);
                Common(quantInput: false, quantOutput: true);
                args.Add("--high_precision");
                break;
            case PieceKind.GreedyHead or PieceKind.SampleHead:
                args.AddRange(["--chip", o.Chip]);
                break;
        }
        if (o.Debug) args.Add("--debug");
        args.AddRange(["--model", bmodelPath]);
        return args;

        void HighPrecision()
        {
            args.Add("--high_precision");
            if (model.Weights.IsQuantized && model.Weights.Symmetric) args.Add("--q_symmetric");
        }
    }

    /// <summary>llm_convert's default: 2 cores on BM1688, 1 elsewhere, when NumCore is 0.</summary>
    public static int NumCore(ResolvedModel model) => model.Options.EffectiveNumCore;

    /// <summary>
    /// Finds model_deploy.py: in <paramref name="tpuMlirPath"/> (the script itself, its folder, or a TPU-MLIR checkout with
    /// python/tools/), else on PATH. Null when it is nowhere.
    /// </summary>
    public static string? Locate(string? tpuMlirPath, string? pathVariable)
    {
        if (!string.IsNullOrWhiteSpace(tpuMlirPath))
        {
            foreach (string candidate in new[] { tpuMlirPath, Path.Combine(tpuMlirPath, ToolName), Path.Combine(tpuMlirPath, "python", "tools", ToolName) })
                if (File.Exists(candidate) && Path.GetFileName(candidate) == ToolName) return Path.GetFullPath(candidate);
            return null;
        }
        foreach (string dir in (pathVariable ?? "").Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries))
        {
            string candidate = Path.Combine(dir, ToolName);
            if (File.Exists(candidate)) return candidate;
        }
        return null;
    }
}
