using System.Globalization;
using System.Text;
using LlmBuild.Core.Chips;
using LlmBuild.Core.Diagnostics;

namespace LlmBuild.Core.Plan;

/// <summary>How an option's text is read.</summary>
public enum OptionKind
{
    /// <summary>Free text (a path, a name, "W,H"); <see cref="OptionDefinition.Check"/> may check it.</summary>
    Text,
    /// <summary>A decimal integer of at least <see cref="OptionDefinition.Minimum"/>.</summary>
    Integer,
    /// <summary>true/false (also 1/0, yes/no); a flag without a value on the command line.</summary>
    Switch,
    /// <summary>One of <see cref="OptionDefinition.Choices"/>, case-insensitive, stored lower case.</summary>
    Choice,
}

/// <summary>
/// One option, declared once: the MSBuild property, the llm_convert.py flags that set it, its default, what values it
/// takes and its one-line description. Everything else that lists options is made from, or checked against, this.
/// </summary>
public sealed record OptionDefinition
{
    public required string Name { get; init; }
    /// <summary>llm_convert.py's spellings (short first); for LlmBuild's own options, the `llmbuild convert` flag in the same style when it has one.</summary>
    public IReadOnlyList<string> Flags { get; init; } = [];
    /// <summary>Earlier names of the property, still read when the current name is not set (e.g. UseBlockWithKv).</summary>
    public IReadOnlyList<string> OldNames { get; init; } = [];
    public required OptionKind Kind { get; init; }
    /// <summary>The value a missing or empty property takes, as text ("" for none).</summary>
    public string Default { get; init; } = "";
    /// <summary>The default Sdk.props writes, when it is an MSBuild expression rather than <see cref="Default"/>.</summary>
    public string? PropsDefault { get; init; }
    public bool Required { get; init; }
    public IReadOnlyList<string> Choices { get; init; } = [];
    public int Minimum { get; init; }
    /// <summary>What a valid value looks like, for the error message; derived from the kind when null.</summary>
    public string? Expected { get; init; }
    /// <summary>An extra check of a non-empty text value (throws a coded error).</summary>
    public Action<string>? Check { get; init; }
    /// <summary>One line: Sdk.props' comment and the command line's help.</summary>
    public required string Doc { get; init; }
    /// <summary>The README's default column, when it says more than <see cref="Default"/>.</summary>
    public string? DefaultDoc { get; init; }
    /// <summary>The README's values column, when it says more than the choices.</summary>
    public string? ValuesDoc { get; init; }
    /// <summary>The <see cref="BuildOptions"/> property holding the option; null for options resolve reads elsewhere.</summary>
    public Func<BuildOptions, object>? Value { get; init; }

    public bool IsSwitch => Kind == OptionKind.Switch;

    /// <summary>The flags as llm_convert.py's help shows them, e.g. "-s/--seq_length".</summary>
    public string FlagDisplay => string.Join('/', Flags);

    /// <summary>The text of a typed value, as a project file or the options stamp holds it.</summary>
    public static string Format(object value) => value switch
    {
        bool b => b ? "true" : "false",
        int i => i.ToString(CultureInfo.InvariantCulture),
        _ => Convert.ToString(value, CultureInfo.InvariantCulture) ?? "",
    };

    /// <summary>The option's trimmed text in <paramref name="values"/>, or null when missing or blank.</summary>
    public string? Text(IReadOnlyDictionary<string, string?> values)
    {
        if (values.TryGetValue(Name, out string? v) && !string.IsNullOrWhiteSpace(v)) return v.Trim();
        foreach (string old in OldNames)
            if (values.TryGetValue(old, out string? o) && !string.IsNullOrWhiteSpace(o)) return o.Trim();
        return null;
    }

    public string ReadText(IReadOnlyDictionary<string, string?> values)
    {
        string text = Text(values) ?? (Required ? throw Missing() : Default);
        if (Kind == OptionKind.Choice) text = ReadChoice(text);
        if (text.Length > 0) Check?.Invoke(text);
        return text;
    }

    public int ReadInteger(IReadOnlyDictionary<string, string?> values)
    {
        string text = Text(values) ?? (Required ? throw Missing() : Default);
        if (int.TryParse(text, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out int v)) return CheckInteger(v, text);
        throw Invalid(text);
    }

    public bool ReadSwitch(IReadOnlyDictionary<string, string?> values) => (Text(values) ?? Default).ToLowerInvariant() switch
    {
        "" or "false" or "0" or "no" => false,
        "true" or "1" or "yes" => true,
        var other => throw Invalid(Text(values) ?? other),
    };

    /// <summary>Checks a typed value (from text or set in code) against the option's range or choices.</summary>
    public void CheckValue(object value)
    {
        switch (value)
        {
            case int i: CheckInteger(i, i.ToString(CultureInfo.InvariantCulture)); break;
            case string s when Kind == OptionKind.Choice && s.Length > 0 && !Choices.Contains(s): throw Invalid(s);
            case string s when s.Length > 0: Check?.Invoke(s); break;
        }
    }

    private int CheckInteger(int v, string text) => v >= Minimum ? v : throw Invalid(text);

    private string ReadChoice(string text)
    {
        string lower = text.ToLowerInvariant();
        return lower.Length == 0 || Choices.Contains(lower) ? lower : throw Invalid(text);
    }

    private string ExpectedText => Expected ?? Kind switch
    {
        OptionKind.Integer => Minimum == 1 ? "a positive integer" : Minimum == 0 ? "an integer ≥ 0" : "an integer",
        OptionKind.Switch => "true or false",
        OptionKind.Choice => "one of " + string.Join(", ", Choices),
        _ => "a value",
    };

    private LlmBuildException Missing() => Invalid("", " (it is required)");

    public LlmBuildException Invalid(string text, string note = "") =>
        new(ErrorCodes.InvalidProperty, $"Property {Name}='{text}' is invalid: expected {ExpectedText}{note}.");
}

/// <summary>
/// Every option LlmBuild reads, in llm_convert.py's order and then LlmBuild's own. The SDK's props (their defaults and
/// comments), the README's property table and the resolve stage's option list are checked against this table by tests;
/// <see cref="BuildOptions"/>, the command line's flags, the project file <c>llmbuild convert</c> writes and the dry
/// run's printout are made from it.
/// </summary>
public static class OptionTable
{
    private static readonly string[] ChipNames = ChipProfile.All.Select(c => c.Name).ToArray();

    public static readonly OptionDefinition ModelPath = new()
    {
        Name = "ModelPath", Flags = ["-m", "--model_path"], Kind = OptionKind.Text, Required = true,
        Expected = "the path of a Hugging Face checkpoint folder or a .gguf file",
        Doc = "Hugging Face checkpoint folder (config.json + *.safetensors or pytorch_model*.bin), or a .gguf file. Required.",
        DefaultDoc = "(required)", ValuesDoc = "checkpoint folder (config.json + `*.safetensors` or `pytorch_model*.bin`) or a `.gguf` file",
        Value = o => o.ModelPath,
    };
    public static readonly OptionDefinition SeqLength = new()
    {
        Name = "SeqLength", Flags = ["-s", "--seq_length"], Kind = OptionKind.Integer, Required = true, Minimum = 1,
        Doc = "Maximum sequence length (the KV cache length). Required, > 0.", DefaultDoc = "(required)", ValuesDoc = "> 0",
        Value = o => o.SeqLength,
    };
    public static readonly OptionDefinition Quantize = new()
    {
        Name = "Quantize", Flags = ["-q", "--quantize"], Kind = OptionKind.Choice, Default = "auto",
        Choices = ["auto", "bf16", "f16", "w8bf16", "w8f16", "w4bf16", "w4f16", "f32"],
        Doc = "auto | bf16 | f16 | w8bf16 | w8f16 | w4bf16 | w4f16 | f32; auto follows quantization_config, else torch_dtype. f32: float32 weights and activations.",
        Value = o => o.Quantize,
    };
    public static readonly OptionDefinition QGroupSize = new()
    {
        Name = "QGroupSize", Flags = ["-g", "--q_group_size"], Kind = OptionKind.Integer, Default = "64", Minimum = 0,
        Expected = "0 (per-channel) or a positive group size such as 64 or 128",
        Doc = "Group size along K for w4/w8 quantization; 0 = per channel.", ValuesDoc = "0 (per channel) or a group size dividing every K",
        Value = o => o.QGroupSize,
    };
    public static readonly OptionDefinition Symmetric = new()
    {
        Name = "Symmetric", Flags = ["--symmetric"], Kind = OptionKind.Switch, Default = "false",
        Doc = "Symmetric weight quantization (zero point 2^(bits-1)).", Value = o => o.Symmetric,
    };
    public static readonly OptionDefinition Chip = new()
    {
        Name = "Chip", Flags = ["-c", "--chip", "--processor"], Kind = OptionKind.Choice, Default = ChipNames[0], Choices = ChipNames,
        Doc = string.Join(" | ", ChipNames) + ".", Value = o => o.Chip,
    };
    public static readonly OptionDefinition NumDevice = new()
    {
        Name = "NumDevice", Flags = ["--num_device"], Kind = OptionKind.Integer, Default = "1", Minimum = 1,
        Expected = "a positive integer (the number of devices the model is split across)",
        Doc = "Devices the model is split across.", ValuesDoc = "≥ 1", Value = o => o.NumDevice,
    };
    public static readonly OptionDefinition DistributeStrategy = new()
    {
        Name = "DistributeStrategy", Flags = ["--distribute_strategy"], Kind = OptionKind.Choice, Default = "tp", Choices = ["tp", "pp"],
        Doc = "tp | pp, used when NumDevice > 1.", Value = o => o.DistributeStrategy,
    };
    public static readonly OptionDefinition NumCore = new()
    {
        Name = "NumCore", Flags = ["--num_core"], Kind = OptionKind.Integer, Default = "0", Minimum = 0,
        Doc = "Cores per chip; 0 = all cores of the chip.", DefaultDoc = "0 (all)", ValuesDoc = "0 … cores of the chip",
        Value = o => o.NumCore,
    };
    public static readonly OptionDefinition Batch = new()
    {
        Name = "Batch", Flags = ["-b", "--batch"], Kind = OptionKind.Integer, Default = "1", Minimum = 1,
        Doc = "Decode batch size.", ValuesDoc = "≥ 1", Value = o => o.Batch,
    };
    public static readonly OptionDefinition MaxInputLength = new()
    {
        Name = "MaxInputLength", Flags = ["--max_input_length"], Kind = OptionKind.Integer, Default = "0", Minimum = 0,
        Doc = "Prefill length L; 0 = SeqLength.", DefaultDoc = "0 (= SeqLength)", ValuesDoc = "≤ SeqLength",
        Value = o => o.MaxInputLength,
    };
    public static readonly OptionDefinition MaxPrefillKvLength = new()
    {
        Name = "MaxPrefillKvLength", Flags = ["--max_prefill_kv_length"], Kind = OptionKind.Integer, Default = "0", Minimum = 0,
        Doc = "Shared-prompt KV length for SharePrompt; 0 = none. Dropped by the current llm_convert.py (warning LLMB0022).",
        ValuesDoc = "< SeqLength; required by SharePrompt; dropped by the current reference (LLMB0022)",
        Value = o => o.MaxPrefillKvLength,
    };
    public static readonly OptionDefinition UseHistoryKv = new()
    {
        Name = "UseHistoryKv", Flags = ["--use_history_kv", "--use_block_with_kv"], OldNames = ["UseBlockWithKv"], Kind = OptionKind.Switch, Default = "false",
        // An old project's UseBlockWithKv reaches the build through the stage targets (they are imported after the
        // project's properties) and, for callers that pass names, through OldNames.
        Doc = "Add block_kv_i nets (prefill that attends to the history KV, in chunks); forces Dynamic, ChunkLength defaults to SeqLength/4 and MaxInputLength = ChunkLength. Old name UseBlockWithKv.",
        DefaultDoc = "false", ValuesDoc = "old name UseBlockWithKv / `--use_block_with_kv`",
        Value = o => o.UseHistoryKv,
    };
    public static readonly OptionDefinition ChunkLength = new()
    {
        Name = "ChunkLength", Flags = ["--chunk_length"], Kind = OptionKind.Integer, Default = "0", Minimum = 0,
        Doc = "Prefill chunk (with UseHistoryKv) and decode segment: adds block_cache_<i>_<s> nets for s = ChunkLength·2^k < SeqLength; 0 = none (SeqLength/4 with UseHistoryKv).",
        DefaultDoc = "0 (SeqLength/4 with UseHistoryKv)", ValuesDoc = "≤ SeqLength/2; the segment nets need Batch = 1 (LLMB0025)",
        Value = o => o.ChunkLength,
    };
    public static readonly OptionDefinition SharePrompt = new()
    {
        Name = "SharePrompt", Flags = ["--share_prompt"], Kind = OptionKind.Switch, Default = "false",
        Doc = "Add block_prompt_i nets whose KV later prefills reuse. Dropped by the current llm_convert.py (warning LLMB0022; use UseHistoryKv).",
        ValuesDoc = "dropped by the current reference (LLMB0022)", Value = o => o.SharePrompt,
    };
    public static readonly OptionDefinition MaxPixels = new()
    {
        Name = "MaxPixels", Flags = ["--max_pixels"], Kind = OptionKind.Text,
        Check = text => BuildOptions.ParseMaxPixels(text),
        Doc = "W,H for vision models; W*H must be a multiple of the family's pixel unit; empty = family default.",
        DefaultDoc = "(family default)", ValuesDoc = "`W,H`", Value = o => o.MaxPixels,
    };
    public static readonly OptionDefinition AudioLength = new()
    {
        Name = "AudioLength", Flags = ["--audio_length"], Kind = OptionKind.Integer, Default = "0", Minimum = 0,
        Doc = "Audio sequence length of an audio family's audio net; 0 = the family's default. No family here has an audio tower yet (warning LLMB0023).",
        ValuesDoc = "≥ 0; for audio families (none yet: LLMB0023)", Value = o => o.AudioLength,
    };
    public static readonly OptionDefinition LoraMaxRank = new()
    {
        Name = "LoraMaxRank", Flags = ["--lora_max_rank"], Kind = OptionKind.Integer, Default = "0", Minimum = 0,
        Doc = "> 0 adds LoRA nets of this rank with zero-initialised A/B weights the runtime fills.", ValuesDoc = "",
        Value = o => o.LoraMaxRank,
    };
    public static readonly OptionDefinition DoSample = new()
    {
        Name = "DoSample", Flags = ["--do_sample"], Kind = OptionKind.Switch, Default = "false",
        Doc = "lm_head emits logits; add greedy_head and sample_head.", Value = o => o.DoSample,
    };
    public static readonly OptionDefinition EmbeddingDisk = new()
    {
        Name = "EmbeddingDisk", Flags = ["--embedding_disk"], Kind = OptionKind.Switch, Default = "false",
        Doc = "No embedding nets; config/embedding.bin holds the table.", Value = o => o.EmbeddingDisk,
    };
    public static readonly OptionDefinition Dynamic = new()
    {
        Name = "Dynamic", Flags = ["--dynamic"], Kind = OptionKind.Switch, Default = "false",
        Doc = "Dynamic prefill (no mask input).", Value = o => o.Dynamic,
    };
    public static readonly OptionDefinition OnlyMlir = new()
    {
        Name = "OnlyMlir", Flags = ["--only_mlir"], Kind = OptionKind.Switch, Default = "false",
        Doc = "Stop after MLIR export.", ValuesDoc = "stop after MLIR export", Value = o => o.OnlyMlir,
    };
    public static readonly OptionDefinition Debug = new()
    {
        Name = "Debug", Flags = ["--debug"], Kind = OptionKind.Switch, Default = "false",
        Doc = "Keep extra intermediates and log more.", Value = o => o.Debug,
    };
    public static readonly OptionDefinition DryRun = new()
    {
        Name = "DryRun", Flags = ["--dry_run"], Kind = OptionKind.Switch, Default = "false",
        Doc = "Resolve and print the configuration; build nothing.", ValuesDoc = "print the resolved configuration, build nothing",
        Value = o => o.DryRun,
    };

    public static readonly OptionDefinition LlmModelName = new()
    {
        Name = "LlmModelName", Kind = OptionKind.Text, PropsDefault = "$(MSBuildProjectName)",
        Check = text =>
        {
            if (text.IndexOfAny(Path.GetInvalidFileNameChars()) >= 0)
                throw new LlmBuildException(ErrorCodes.InvalidProperty, $"Property LlmModelName='{text}' is not a valid file name.");
        },
        Doc = "Name of the output bmodel: bin/$(LlmModelName).bmodel.", DefaultDoc = "project name", ValuesDoc = "output file name",
    };
    public static readonly OptionDefinition QuantizeLmHead = new()
    {
        Name = "QuantizeLmHead", Kind = OptionKind.Choice, Choices = ["false", "true", "w8"], Default = "false",
        Doc = "Quantize lm_head: true like the block linears (w4/w8 modes), w8 at 8 bits even in a w4 build; by default (false) it stays in the activation dtype.",
        ValuesDoc = "false (activation dtype), true (the model's width), w8 (8 bits in a w4 build too)",
    };
    public static readonly OptionDefinition QuantizeVit = new()
    {
        Name = "QuantizeVit", Kind = OptionKind.Switch, Default = "false",
        Doc = "Vision-language models: quantize the vision tower's linears like the LLM's (w4/w8 modes); by default the tower stays in the activation dtype, as the reference tool compiles it.",
        ValuesDoc = "quantize the vision tower's linears",
    };
    public static readonly OptionDefinition DeviceMemoryMiB = new()
    {
        Name = "DeviceMemoryMiB", Kind = OptionKind.Integer, Default = "0", Minimum = 0,
        Expected = "0 (chip default) or a size in MiB",
        Doc = "Device memory budget in MiB for the codegen check; 0 = the chip's default.",
        DefaultDoc = "0 (chip default)", ValuesDoc = "device-memory budget checked by codegen",
    };
    public static readonly OptionDefinition TpuMlirPath = new()
    {
        Name = "TpuMlirPath", Kind = OptionKind.Text,
        Doc = "TPU-MLIR for silicon bmodels: model_deploy.py itself, its folder or a TPU-MLIR checkout. Setting it selects the tpu-mlir backend.",
        ValuesDoc = "model_deploy.py (or its folder): selects the tpu-mlir backend",
    };
    public static readonly OptionDefinition LlmCodegenBackend = new()
    {
        Name = "LlmCodegenBackend", Kind = OptionKind.Choice, Choices = ["builtin", "tpu-mlir"],
        Expected = "builtin or tpu-mlir",
        Doc = "builtin (LlmBuild's emulator backend) | tpu-mlir (model_deploy.py per piece, from TpuMlirPath or PATH); " +
              "empty = decided at build time: tpu-mlir when TpuMlirPath is set or model_deploy.py is on PATH, else builtin.",
        DefaultDoc = "(auto)",
        ValuesDoc = "builtin, tpu-mlir; empty: tpu-mlir when TpuMlirPath is set or model_deploy.py is on PATH, else builtin",
    };
    public static readonly OptionDefinition LlmIgnoreTensors = new()
    {
        Name = "LlmIgnoreTensors", Kind = OptionKind.Text,
        Doc = "Checkpoint tensors (names or * patterns, separated by ;) the build drops on purpose, with a warning. Any other tensor no role of the family uses stops the build (LLMB0010).",
        ValuesDoc = "checkpoint tensors (names or `*` patterns, `;`-separated) dropped on purpose; any other unused tensor is LLMB0010",
    };
    public static readonly OptionDefinition QuantizeMethod = new()
    {
        Name = "QuantizeMethod", Flags = ["--quantize_method"], Kind = OptionKind.Choice, Choices = ["rtn", "gptq", "awq"], Default = "rtn",
        Doc = "How w4/w8 weights are rounded: rtn (round to nearest), gptq (error-compensating rounding on calibration data), awq (activation-aware scales folded into the preceding norm, then rounding).",
        ValuesDoc = "rtn (round to nearest), gptq, awq: calibrated on LlmCalibrationText or self-generated text",
    };
    public static readonly OptionDefinition QuantizeBudget = new()
    {
        Name = "QuantizeBudget", Flags = ["--quantize_budget"], Kind = OptionKind.Text,
        Expected = "a size such as 350MiB or bits per weight such as 5.0bpw",
        Check = text => WeightBudget.Parse(text),
        Doc = "w4 builds: mixed precision under a budget — the block linears most sensitive on calibration data are kept at 8 bits until the weights reach this size (NNNMiB, all weight files) or average (N.Nbpw, block linears with their scales and zero points).",
        ValuesDoc = "`<n>MiB` (all stored weights) or `<x>bpw` (block linears, scales included): most sensitive linears at w8 until met",
    };
    public static readonly OptionDefinition CalibrationSamples = new()
    {
        Name = "CalibrationSamples", Flags = ["--calibration_samples"], Kind = OptionKind.Integer, Default = "32", Minimum = 1,
        Doc = "Calibration sequences for gptq/awq.", ValuesDoc = "sequences run through the f32 reference for gptq/awq",
    };
    public static readonly OptionDefinition CalibrationSeqLength = new()
    {
        Name = "CalibrationSeqLength", Flags = ["--calibration_seq_length"], Kind = OptionKind.Integer, Default = "128", Minimum = 8,
        Doc = "Tokens per calibration sequence.", ValuesDoc = "tokens per calibration sequence",
    };
    public static readonly OptionDefinition CalibrationSeed = new()
    {
        Name = "CalibrationSeed", Flags = ["--calibration_seed"], Kind = OptionKind.Integer, Default = "0", Minimum = 0,
        Doc = "Seed of the calibration text: the windows cut from LlmCalibrationText, or the model's own sampled text when none is given.",
        ValuesDoc = "seeds the text windows or the self-generated text",
    };
    public static readonly OptionDefinition GptqActOrder = new()
    {
        Name = "GptqActOrder", Flags = ["--gptq_act_order"], Kind = OptionKind.Switch, Default = "false",
        Doc = "gptq: quantize the inputs in order of decreasing Hessian diagonal (stored with input_perm; the graph gathers the input).",
        ValuesDoc = "gptq: quantize inputs in decreasing-activation order (input_perm)",
    };
    public static readonly OptionDefinition LlmCalibrationText = new()
    {
        Name = "LlmCalibrationText", Flags = ["--calibration_text"], Kind = OptionKind.Text,
        Doc = "Text files for gptq/awq calibration, normally given as LlmCalibrationText items (the SDK passes their full paths here, ;-separated); none = text the model samples itself.",
        ValuesDoc = "calibration text files (the `LlmCalibrationText` item); none: text the model samples itself from neutral starts",
    };
    public static readonly OptionDefinition Verify = new()
    {
        Name = "Verify", Kind = OptionKind.Switch, Default = "true",
        Doc = "Run the built model against the f32 reference after combining (built-in backend only: the emulator runs it).",
        ValuesDoc = "run the built model against the f32 reference after combining",
    };

    /// <summary>llm_convert.py's options, in its order.</summary>
    public static IReadOnlyList<OptionDefinition> ConvertOptions { get; } =
    [
        ModelPath, SeqLength, Quantize, QGroupSize, Symmetric, Chip, NumDevice, DistributeStrategy, NumCore, Batch,
        MaxInputLength, MaxPrefillKvLength, UseHistoryKv, ChunkLength, SharePrompt, MaxPixels, AudioLength, LoraMaxRank, DoSample, EmbeddingDisk,
        Dynamic, OnlyMlir, Debug, DryRun,
    ];

    /// <summary>LlmBuild's own options.</summary>
    public static IReadOnlyList<OptionDefinition> LlmBuildOptions { get; } =
        [LlmModelName, QuantizeLmHead, QuantizeVit, DeviceMemoryMiB, TpuMlirPath, LlmCodegenBackend, LlmIgnoreTensors, Verify,
         QuantizeMethod, QuantizeBudget, CalibrationSamples, CalibrationSeqLength, CalibrationSeed, GptqActOrder, LlmCalibrationText];

    public static IReadOnlyList<OptionDefinition> All { get; } = [.. ConvertOptions, .. LlmBuildOptions];

    /// <summary>The options <see cref="BuildOptions"/> holds, in its order.</summary>
    public static IReadOnlyList<OptionDefinition> BuildOptionsFields { get; } = All.Where(o => o.Value is not null).ToArray();

    /// <summary>The README's property table (between its options markers; a test compares them).</summary>
    public static string MarkdownTable()
    {
        var sb = new StringBuilder("| property | llm_convert flag | default | values |\n|---|---|---|---|\n");
        foreach (var o in All)
        {
            string flags = o.Flags.Count > 0 ? $"`{o.FlagDisplay}`" : "";
            string values = o.ValuesDoc ?? (o.Choices.Count > 0 ? string.Join(", ", o.Choices) : "");
            sb.Append($"| {o.Name} | {flags} | {o.DefaultDoc ?? o.Default} | {values} |\n");
        }
        return sb.ToString();
    }

    /// <summary>
    /// The options section of Sdk.props (between its options markers; a test compares them): one property per option
    /// with its default, set only when the project leaves it empty, under a comment holding its flag and description.
    /// </summary>
    public static string PropsSection()
    {
        var sb = new StringBuilder();
        void Group(string title, IEnumerable<OptionDefinition> options)
        {
            sb.Append("  <!-- ===== ").Append(title).Append(" ===== -->\n  <PropertyGroup>\n");
            foreach (var o in options)
            {
                // XML comments cannot hold "--", so a flag is shown by its short name or its long name without dashes.
                string flag = o.Flags.Count == 0 ? "" : $"({(o.Flags[0].StartsWith("--", StringComparison.Ordinal) ? o.Flags[0][2..] : o.Flags[0])}) ";
                sb.Append("    <!-- ").Append(flag).Append(o.Doc).Append(" -->\n");
                sb.Append("    <").Append(o.Name).Append(" Condition=\"'$(").Append(o.Name).Append(")' == ''\">")
                  .Append(o.PropsDefault ?? o.Default).Append("</").Append(o.Name).Append(">\n");
            }
            sb.Append("  </PropertyGroup>\n");
        }
        Group("Model conversion options: one per llm_convert.py flag, same defaults.", ConvertOptions);
        sb.Append('\n');
        Group("LlmBuild's own options.", LlmBuildOptions);
        return sb.ToString();
    }
}
