using System.CommandLine;
using LlmBuild.Core.Numpy;
using LlmBuild.Core.Runtime;

namespace LlmBuild.Cli.Commands;

/// <summary><c>llmbuild logits FILE.bmodel --ids 1,2,3 [--all-positions] --out F.npy</c>: f32 logits of the built model (emulator).</summary>
public static class LogitsCommand
{
    public static Command Create()
    {
        var bmodel = new Argument<string>("bmodel") { Description = "A bmodel built by LlmBuild's built-in backend." };
        var ids = new Option<string>("--ids") { Description = "Token ids (1,2,3) or the path of a file of ids; fed teacher-forced from position 0.", Required = true };
        var all = new Option<bool>("--all-positions") { Description = "Write the logits of every position ([n, vocab]) instead of the last ([1, vocab])." };
        var output = new Option<string>("--out") { Description = "The .npy file to write (f32).", Required = true };
        var config = new Option<string?>("--config") { Description = "The model's config folder, read for EmbeddingDisk models' embedding.bin (default: config/ beside the bmodel)." };
        var noVerify = NoVerifyWeightsOption.Create();
        var image = ImageOption.Create("Vision-language models: an image whose embeddings replace the image-pad ids of --ids (as many as the image's tokens); repeat for several.");
        var command = new Command("logits", "Run a built model in the emulator on token ids and write its f32 logits as .npy.");
        command.Arguments.Add(bmodel);
        command.Options.Add(ids);
        command.Options.Add(all);
        command.Options.Add(output);
        command.Options.Add(config);
        command.Options.Add(noVerify);
        command.Options.Add(image);
        command.SetAction(parse =>
        {
            int[] tokens = TokenIds.Parse(parse.GetValue(ids)!);
            bool allPositions = parse.GetValue(all);
            string path = parse.GetValue(bmodel)!;
            using var emu = LlmEmulator.Load(path, parse.GetValue(config), verifyWeights: !parse.GetValue(noVerify));
            string[] imagePaths = parse.GetValue(image) ?? [];
            float[] logits;
            if (imagePaths.Length == 0) logits = emu.TeacherForced(tokens, allPositions);
            else
            {
                string configDir = parse.GetValue(config) ?? Path.Combine(Path.GetDirectoryName(Path.GetFullPath(path))!, "config");
                ImagePrompt images = ImageOption.Encode(emu, configDir, imagePaths);
                logits = emu.Prefill(tokens, images.Positions(tokens), images.Embeds, images.Vision.ImageTokenId, allPositions);
            }
            NpyFile.WriteFloat32(parse.GetValue(output)!, logits, [allPositions ? tokens.Length : 1, emu.VocabSize]);
            return 0;
        });
        return command;
    }
}
