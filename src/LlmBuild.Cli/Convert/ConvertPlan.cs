using System.Globalization;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Plan;
using LlmBuild.Core.Stages;

namespace LlmBuild.Cli.Convert;

/// <summary>
/// Everything <c>llmbuild convert</c> decided before building: the checked options, the resolved model, the
/// output folder and the bmodel's name. Creating a plan runs every check the build's resolve stage runs (the
/// same Core code), plus the max_pixels check, so a bad flag fails at once and nothing is written.
/// </summary>
public sealed record ConvertPlan
{
    public required BuildOptions Options { get; init; }
    /// <summary>The resolved model (family, quantization, pieces), named <see cref="BModelName"/>.</summary>
    public required ResolvedModel Model { get; init; }
    /// <summary>The checkpoint folder's name, lower case, as llm_convert.py names its outputs.</summary>
    public required string ModelName { get; init; }
    /// <summary>The combined bmodel's file name without extension (the build's LlmModelName).</summary>
    public required string BModelName { get; init; }
    public required string OutDir { get; init; }

    public string ProjectPath => Path.Combine(OutDir, ProjectFile.FileName);
    public string BModelPath => Path.Combine(OutDir, BModelName + ".bmodel");
    public string ConfigDir => Path.Combine(OutDir, "config");
    public string ModelLogPath => Path.Combine(OutDir, "model.log");
    /// <summary>The last build's whole output; under obj/ because every build rewrites it (a rerun must leave the
    /// outputs untouched).</summary>
    public string BuildLogPath => Path.Combine(OutDir, "obj", "build.log");
    /// <summary>Where the stages keep their intermediates (the SDK's obj/&lt;Configuration&gt;/llm/).</summary>
    public string IntermediateDir => Path.Combine(OutDir, "obj", ProjectFile.Configuration, "llm");

    /// <summary>Checks the request and resolves the model against its config.json and checkpoint; writes nothing.</summary>
    public static ConvertPlan Create(ConvertRequest request, string currentDirectory)
    {
        var values = request.Values.ToDictionary(p => p.Key, p => (string?)p.Value, StringComparer.Ordinal);
        // Relative paths are relative to where the command runs, as in llm_convert.py.
        string modelPath = OptionTable.ModelPath.Name;
        if (values.TryGetValue(modelPath, out string? model) && !string.IsNullOrWhiteSpace(model))
            values[modelPath] = Path.TrimEndingDirectorySeparator(Path.GetFullPath(model.Trim(), currentDirectory));
        string text = OptionTable.LlmCalibrationText.Name;
        if (values.TryGetValue(text, out string? files) && !string.IsNullOrWhiteSpace(files))
            values[text] = string.Join(';', files.Split(';', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(f => Path.GetFullPath(f, currentDirectory)));

        BuildOptions options;
        ResolvedModel resolved;
        try
        {
            options = BuildOptions.Parse(values);
            PixelMultiples.Check(options);
            resolved = ResolveStage.Resolve(values, new List<LlmBuildWarning>());
        }
        catch (LlmBuildException e)
        {
            throw ConvertFlags.NameFlag(e);
        }

        // A .gguf file names the model without its extension.
        string modelName = (LlmBuild.Core.Checkpoints.GgufCheckpoint.IsGgufPath(options.ModelPath)
            ? Path.GetFileNameWithoutExtension(options.ModelPath) : Path.GetFileName(options.ModelPath)).ToLowerInvariant();
        string bmodelName = OutputNames.BModelName(modelName, resolved.Quantize, options);
        string outDir = string.IsNullOrWhiteSpace(request.OutDir)
            ? Path.Combine(currentDirectory, OutputNames.DefaultOutDir(modelName, options.Chip, resolved.Quantize))
            : Path.GetFullPath(request.OutDir.Trim(), currentDirectory);
        outDir = Path.TrimEndingDirectorySeparator(outDir);
        if (File.Exists(outDir))
            throw new LlmBuildException(ErrorCodes.BadOutputDirectory, $"-o/--out_dir '{outDir}' is a file. Give a folder (it is created if missing).", outDir);

        return new ConvertPlan
        {
            Options = options,
            Model = resolved with { Name = bmodelName },
            ModelName = modelName,
            BModelName = bmodelName,
            OutDir = outDir,
        };
    }

    /// <summary>What --dry_run prints: where the outputs go, then the resolve stage's own description.</summary>
    public string Describe()
    {
        var o = Options;
        string maxPixels = o.MaxPixels.Length > 0 ? o.MaxPixels : "(family default)";
        return string.Create(CultureInfo.InvariantCulture, $"""
            out_dir                  {OutDir}
            bmodel                   {BModelPath}
            chip                     {o.Chip}, {(o.Chip == "bm1684x" ? $"{o.NumDevice} device(s)" : $"{o.EffectiveNumCore} core(s)")}
            quantize                 {o.Quantize} -> {Model.Quantize}
            seq_length               {o.SeqLength} (prefill {o.PrefillLength}{(o.MaxPrefillKvLength > 0 ? $", prefill kv {o.MaxPrefillKvLength}" : "")})
            max_shape                batch {o.Batch}, seq {o.SeqLength}, {(o.Dynamic ? "dynamic" : "static")}
            max_pixels               {maxPixels}

            """) + ResolveStage.Describe(Model);
    }
}

/// <summary>The names llm_convert.py gives its outputs, without its wall-clock timestamp (builds are reproducible).</summary>
public static class OutputNames
{
    /// <summary>
    /// <c>&lt;model&gt;_&lt;quantize&gt;_seq&lt;N&gt;_&lt;chip&gt;_&lt;n&gt;dev</c> on bm1684x, <c>…_&lt;n&gt;core</c> on the
    /// multi-core chips, then <c>_dynamic</c> or <c>_static</c>. n is the device count, or the cores used (all
    /// of the chip's cores when --num_core is 0).
    /// </summary>
    public static string BModelName(string modelName, string quantize, BuildOptions o)
    {
        string parallel = o.Chip == "bm1684x"
            ? string.Create(CultureInfo.InvariantCulture, $"{o.NumDevice}dev")
            : string.Create(CultureInfo.InvariantCulture, $"{o.EffectiveNumCore}core");
        return string.Create(CultureInfo.InvariantCulture,
            $"{modelName}_{quantize}_seq{o.SeqLength}_{o.Chip}_{parallel}_{(o.Dynamic ? "dynamic" : "static")}");
    }

    /// <summary>The default -o: <c>&lt;model_name&gt;_&lt;chip&gt;_&lt;quantize&gt;</c> in the current folder.</summary>
    public static string DefaultOutDir(string modelName, string chip, string quantize) => $"{modelName}_{chip}_{quantize}";
}
