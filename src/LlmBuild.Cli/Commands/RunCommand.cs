using System.CommandLine;
using System.Globalization;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Runtime;
using LlmBuild.Core.Serving;
using LlmBuild.Core.Tokenization;
using LlmBuild.Core.Tokenization.Chat;

namespace LlmBuild.Cli.Commands;

/// <summary>
/// <c>llmbuild run FILE.bmodel --config DIR [-p PROMPT] [--system S] [--sample]</c>: chat with a built model on the
/// emulator, as LLM-TPU's board demos do — streamed answers, first-token latency (FTL) and tokens/s (TPS).
/// </summary>
public static class RunCommand
{
    public static Command Create()
    {
        var bmodel = new Argument<string>("bmodel") { Description = "The built model (bin/<name>.bmodel)." };
        var config = new Option<string?>("--config") { Description = "The model's config folder (default: config/ beside the bmodel)." };
        var prompt = new Option<string?>("-p", "--prompt") { Description = "Answer one prompt and exit (default: interactive chat)." };
        var system = new Option<string?>("--system") { Description = "A system prompt put first in every conversation." };
        var sample = new Option<bool>("--sample") { Description = "Sample per generation_config.json (temperature, top-k, top-p, repetition penalty) instead of greedy." };
        var seed = new Option<int>("--seed") { Description = "Seed of the sampler.", DefaultValueFactory = _ => 0 };
        var maxNew = new Option<int?>("--max-new-tokens") { Description = "Stop an answer after this many tokens." };
        var image = ImageOption.Create("Vision-language models: an image (PNG, JPEG) shown with the first question; repeat for several.");
        var noVerify = NoVerifyWeightsOption.Create();
        var command = new Command("run", "Chat with a built bmodel on the CPU emulator.");
        command.Arguments.Add(bmodel);
        foreach (var o in new Option[] { config, prompt, system, sample, seed, maxNew, image, noVerify }) command.Options.Add(o);
        command.SetAction(parse =>
        {
            string path = parse.GetValue(bmodel)!;
            int? maxNewTokens = CommandRunner.AtLeast(parse.GetValue(maxNew), 1, "--max-new-tokens");
            string? once = parse.GetValue(prompt);
            // Check before loading the model: interactive chat on a closed stdin would wait forever for a question.
            if (once is null && ConsoleStreams.InputCanNeverArrive()) throw InputClosed();
            string configDir = parse.GetValue(config) ?? Path.Combine(Path.GetDirectoryName(Path.GetFullPath(path))!, "config");
            var tokenizer = Tokenizer.Load(configDir);
            var template = ChatTemplate.Load(configDir);
            // Read (and so check) generation_config.json even for greedy runs: a broken file is reported now, not on
            // the first --sample run.
            var configured = SamplingOptions.FromGenerationConfig(configDir);
            var sampling = parse.GetValue(sample) ? configured : null;
            using var emulator = LlmEmulator.Load(path, configDir, verifyWeights: !parse.GetValue(noVerify));
            string[] imagePaths = parse.GetValue(image) ?? [];
            ImagePrompt? images = imagePaths.Length == 0 ? null : ImageOption.Encode(emulator, configDir, imagePaths);
            var sampler = new TokenSampler(sampling, parse.GetValue(seed));
            ITokenGenerator generator = images is null ? new EmulatorTokenGenerator(emulator, sampler) : new ImageTokenGenerator(emulator, sampler, images);
            var session = new ChatSession(tokenizer, template, generator, new ChatSessionOptions
            {
                SeqLength = emulator.SeqLength,
                MaxInputLength = emulator.MaxPromptLength,
                SystemPrompt = parse.GetValue(system),
                MaxNewTokens = maxNewTokens,
                ExpandPrompt = images is null ? null : ids => images.Expand(ids),
            });
            Console.WriteLine($"Model: {Path.GetFileName(path)} (SeqLength {emulator.SeqLength}, {(sampling is null ? "greedy" : "sampling: " + sampling)})");
            // The images go with the first question, where Qwen2-VL's chat template puts an image: before the text.
            string imagePrefix = images is null ? "" : ImageOption.Placeholders(tokenizer, images);
            if (once is not null)
            {
                Answer(session, imagePrefix + once);
                return 0;
            }
            Console.WriteLine("Type a message; an empty line or 'exit' quits, 'clear' starts a new conversation.");
            while (true)
            {
                Console.Write("\nQuestion: ");
                string? line = ReadQuestion();
                if (line is null || line.Trim() is "" or "exit" or "quit") return 0;
                if (line.Trim() == "clear")
                {
                    session.Clear();
                    Console.WriteLine("(history cleared)");
                    continue;
                }
                Answer(session, imagePrefix + line);
                imagePrefix = "";
            }
        });
        return command;
    }

    private static LlmBuildException InputClosed() =>
        new(ErrorCodes.StandardInputClosed,
            "Standard input is closed, so interactive chat would wait forever for a question. Pass -p PROMPT to answer one prompt, " +
            "or run it from a terminal or with questions piped in (one per line).");

    private static string? ReadQuestion()
    {
        try
        {
            return Console.ReadLine();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw InputClosed();
        }
    }

    private static void Answer(ChatSession session, string question)
    {
        Console.Write("Answer: ");
        ChatTurn turn = session.Ask(question, text => { Console.Write(text); Console.Out.Flush(); });
        Console.WriteLine();
        if (turn.HistoryDroppedBeforeTurn) Console.WriteLine("(the conversation no longer fit SeqLength: history was dropped)");
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"FTL: {turn.FirstTokenLatency.TotalSeconds:0.000} s"));
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"TPS: {turn.TokensPerSecond:0.00} token/s ({turn.GeneratedTokens} tokens, stop: {turn.StopReason})"));
        if (turn.HistoryClearedAfterTurn) Console.WriteLine("(SeqLength reached: history cleared)");
    }
}
