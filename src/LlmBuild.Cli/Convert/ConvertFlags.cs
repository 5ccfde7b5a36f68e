using System.CommandLine;
using LlmBuild.Core.Diagnostics;

namespace LlmBuild.Cli.Convert;

/// <summary>One llm_convert.py flag that maps to an SDK property: its names and whether it takes a value.</summary>
public sealed record PropertyFlag(string Property, string[] Names, bool IsSwitch, string Help)
{
    /// <summary>The flag as llm_convert.py's help shows it, e.g. "-s/--seq_length".</summary>
    public string Display => string.Join('/', Names);
}

/// <summary>What the command line asked for, before any check: SDK property values plus the CLI-only flags.</summary>
public sealed record ConvertRequest
{
    /// <summary>Property name → value, only for the flags given (missing ones take the SDK default).</summary>
    public required IReadOnlyDictionary<string, string> Values { get; init; }
    public string? OutDir { get; init; }
    public bool Again { get; init; }
    public bool ShowVersion { get; init; }
    public bool DryRun => Values.TryGetValue("DryRun", out string? v) && v == "true";
}

/// <summary>
/// The flags of <c>llm_convert.py</c> with the same short and long names. Values are read as text and checked by
/// <see cref="LlmBuild.Core.Plan.BuildOptions.Parse"/>, the same code the build's resolve stage runs, so a
/// bad flag gives the same coded error the build would.
/// </summary>
public static class ConvertFlags
{
    public static readonly IReadOnlyList<PropertyFlag> Properties =
    [
        new("ModelPath", ["-m", "--model_path"], false, "Hugging Face checkpoint folder (config.json + *.safetensors or pytorch_model*.bin). Required."),
        new("SeqLength", ["-s", "--seq_length"], false, "Maximum sequence length (KV cache length). Required, > 0."),
        new("Quantize", ["-q", "--quantize"], false, "auto | bf16 | f16 | w8bf16 | w4bf16 | w8f16 | w4f16 (default auto)."),
        new("QGroupSize", ["-g", "--q_group_size"], false, "Group size for w4/w8 quantization; 0 = per channel (default 64)."),
        new("Symmetric", ["--symmetric"], true, "Symmetric weight quantization."),
        new("Chip", ["-c", "--chip", "--processor"], false, "bm1684x | bm1688 | cv186x (default bm1684x)."),
        new("NumDevice", ["--num_device"], false, "Devices the model is split across (default 1)."),
        new("DistributeStrategy", ["--distribute_strategy"], false, "tp | pp, used when --num_device > 1 (default tp)."),
        new("NumCore", ["--num_core"], false, "Cores per chip; 0 = all cores of the chip (default 0)."),
        new("Batch", ["-b", "--batch"], false, "Decode batch size (default 1)."),
        new("MaxInputLength", ["--max_input_length"], false, "Prefill length; 0 = seq_length (default 0)."),
        new("MaxPrefillKvLength", ["--max_prefill_kv_length"], false, "Shared-prompt KV length for --share_prompt (default 0)."),
        new("UseBlockWithKv", ["--use_block_with_kv"], true, "Add block_kv nets: prefill that attends to history KV."),
        new("SharePrompt", ["--share_prompt"], true, "Add block_prompt nets whose KV later prefills reuse."),
        new("MaxPixels", ["--max_pixels"], false, "W,H for vision models; W*H must be a multiple of the family's pixel unit (28*28 or 32*32)."),
        new("LoraMaxRank", ["--lora_max_rank"], false, "> 0 adds LoRA nets of this rank (default 0)."),
        new("DoSample", ["--do_sample"], true, "lm_head emits logits; add greedy_head and sample_head."),
        new("EmbeddingDisk", ["--embedding_disk"], true, "No embedding nets; config/embedding.bin holds the table."),
        new("Dynamic", ["--dynamic"], true, "Dynamic prefill."),
        new("OnlyMlir", ["--only_mlir"], true, "Stop after MLIR export."),
        new("Debug", ["--debug"], true, "Keep extra intermediates and log more."),
        new("DryRun", ["--dry_run"], true, "Print the resolved configuration and exit; build nothing."),
    ];

    public static readonly string[] OutDirNames = ["-o", "--out_dir"];
    public static readonly string[] AgainNames = ["--again"];
    public static readonly string[] VersionNames = ["-V", "--version"];

    /// <summary>The System.CommandLine options of <c>llmbuild convert</c>, in llm_convert.py's order.</summary>
    public sealed class OptionSet
    {
        internal readonly List<(PropertyFlag Flag, Option Option)> PropertyOptions = [];
        internal readonly Option<string[]> OutDir;
        internal readonly Option<bool> Again;
        internal readonly Option<bool> Version;

        internal OptionSet()
        {
            foreach (var flag in Properties)
            {
                var (name, aliases) = Split(flag.Names);
                Option option = flag.IsSwitch
                    ? new Option<bool>(name, aliases) { Description = flag.Help, Arity = ArgumentArity.Zero }
                    : LastWins(name, aliases, flag.Help, flag.Property);
                PropertyOptions.Add((flag, option));
            }
            OutDir = LastWins("--out_dir", ["-o"], "Output folder (default ./<model_name>_<chip>_<quantize>). It receives model.llmproj, the bmodel, config/ and model.log.", "DIR");
            Again = new Option<bool>(AgainNames[0]) { Description = "Accepted for llm_convert.py compatibility: every run is incremental.", Arity = ArgumentArity.Zero };
            Version = new Option<bool>("--version", "-V") { Description = "Print the tool and format versions and exit.", Arity = ArgumentArity.Zero };
        }

        /// <summary>
        /// A flag with one value per occurrence where a repeated flag overrides the earlier one, as argparse does
        /// (scripts often append an override to a base command line).
        /// </summary>
        private static Option<string[]> LastWins(string name, string[] aliases, string help, string helpName) =>
            new(name, aliases) { Description = help, HelpName = helpName, Arity = ArgumentArity.OneOrMore, AllowMultipleArgumentsPerToken = false };

        /// <summary>The first long name is the option's name; the others are aliases.</summary>
        private static (string Name, string[] Aliases) Split(string[] names)
        {
            string name = names.First(n => n.StartsWith("--", StringComparison.Ordinal));
            return (name, names.Where(n => n != name).ToArray());
        }

        public IEnumerable<Option> All => PropertyOptions.Select(p => p.Option).Append(OutDir).Append(Again).Append(Version);

        /// <summary>Reads the parsed command line; nothing is checked here.</summary>
        public ConvertRequest Read(ParseResult result)
        {
            var values = new Dictionary<string, string>(StringComparer.Ordinal);
            foreach (var (flag, option) in PropertyOptions)
            {
                if (option is Option<bool> sw)
                {
                    if (result.GetValue(sw)) values[flag.Property] = "true";
                }
                else if (result.GetValue((Option<string[]>)option) is [.., var last])
                {
                    values[flag.Property] = last;
                }
            }
            return new ConvertRequest
            {
                Values = values,
                OutDir = result.GetValue(OutDir) is [.., var outDir] ? outDir : null,
                Again = result.GetValue(Again),
                ShowVersion = result.GetValue(Version),
            };
        }
    }

    public static OptionSet CreateOptions() => new();

    /// <summary>
    /// Prefixes a coded property error with the flag that set it ("-s/--seq_length: Property SeqLength='x' is
    /// invalid ..."), so the message names what the user typed as well as the property the build uses.
    /// </summary>
    public static LlmBuildException NameFlag(LlmBuildException e)
    {
        foreach (var flag in Properties)
            if (e.Message.StartsWith($"Property {flag.Property}=", StringComparison.Ordinal)
                || e.Message.StartsWith($"{flag.Property} (", StringComparison.Ordinal)
                || e.Message.StartsWith($"{flag.Property}=", StringComparison.Ordinal))
                return new LlmBuildException(e.Code, $"{flag.Display}: {e.Message}", e.File, e);
        return e;
    }
}
