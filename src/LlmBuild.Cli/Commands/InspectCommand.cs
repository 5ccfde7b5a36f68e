using System.CommandLine;
using LlmBuild.Core.BModel;
using LlmBuild.Core.Diagnostics;

namespace LlmBuild.Cli.Commands;

/// <summary><c>llmbuild inspect FILE.bmodel [--json]</c>: what TPU-MLIR's <c>model_tool --info</c> prints.</summary>
public static class InspectCommand
{
    public static Command Create()
    {
        var file = new Argument<FileInfo>("file") { Description = "The .bmodel to describe." };
        var json = new Option<bool>("--json") { Description = "Print JSON for machines instead of text." };
        var noVerify = NoVerifyWeightsOption.Create();
        var command = new Command("inspect", "Describe a bmodel: version, chip, nets, stages, tensors and memory sizes.") { file, json, noVerify };
        command.SetAction(result =>
        {
            string path = result.GetValue(file)!.FullName;
            try
            {
                Console.Out.Write(result.GetValue(json) ? BModelInspector.Json(path, !result.GetValue(noVerify)) : BModelInspector.Text(path, !result.GetValue(noVerify)));
                return 0;
            }
            catch (LlmBuildException e)
            {
                // System.CommandLine's own handler would otherwise print it as an unhandled exception.
                Console.Error.WriteLine($"error {e.Code}: {e.Message}");
                return 1;
            }
        });
        return command;
    }
}
