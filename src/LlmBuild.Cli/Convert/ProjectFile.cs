using System.Globalization;
using System.Security;
using System.Text;
using LlmBuild.Core.Plan;

namespace LlmBuild.Cli.Convert;

/// <summary>
/// The <c>model.llmproj</c> that <c>llmbuild convert</c> writes into the output folder: every option as a
/// property, the SDK imported by absolute path, and the outputs placed directly in the output folder (as
/// llm_convert.py places them) rather than in bin/. Building it with <c>dotnet build</c> gives the same result.
/// </summary>
public static class ProjectFile
{
    public const string FileName = "model.llmproj";
    /// <summary>The MSBuild Configuration the tool builds (the SDK's default).</summary>
    public const string Configuration = "Debug";
    /// <summary>First line of every generated project; a model.llmproj without it is the user's and is never overwritten.</summary>
    public const string Marker = "<!-- Written by llmbuild convert.";

    /// <summary>The project text for a plan; <paramref name="sdkDir"/> is the folder holding Sdk.props and Sdk.targets.</summary>
    public static string Generate(ConvertPlan plan, string sdkDir)
    {
        BuildOptions o = plan.Options;
        var properties = new List<(string Name, string Value)>
        {
            ("ModelPath", o.ModelPath),
            ("SeqLength", Int(o.SeqLength)),
            ("Quantize", o.Quantize),
            ("QGroupSize", Int(o.QGroupSize)),
            ("Symmetric", Bool(o.Symmetric)),
            ("Chip", o.Chip),
            ("NumDevice", Int(o.NumDevice)),
            ("DistributeStrategy", o.DistributeStrategy),
            ("NumCore", Int(o.NumCore)),
            ("Batch", Int(o.Batch)),
            ("MaxInputLength", Int(o.MaxInputLength)),
            ("MaxPrefillKvLength", Int(o.MaxPrefillKvLength)),
            ("UseBlockWithKv", Bool(o.UseBlockWithKv)),
            ("SharePrompt", Bool(o.SharePrompt)),
            ("MaxPixels", o.MaxPixels),
            ("LoraMaxRank", Int(o.LoraMaxRank)),
            ("DoSample", Bool(o.DoSample)),
            ("EmbeddingDisk", Bool(o.EmbeddingDisk)),
            ("Dynamic", Bool(o.Dynamic)),
            ("OnlyMlir", Bool(o.OnlyMlir)),
            ("Debug", Bool(o.Debug)),
            ("LlmModelName", plan.BModelName),
        };

        string props = Path.Combine(sdkDir, "Sdk.props");
        string targets = Path.Combine(sdkDir, "Sdk.targets");
        var sb = new StringBuilder();
        sb.Append(Marker).Append(" Rebuild with `dotnet build ").Append(FileName).Append("` or by running the same command again. -->\n");
        sb.Append("<Project>\n");
        sb.Append("  <PropertyGroup>\n");
        sb.Append("    <!-- Nothing from the folders above the output folder takes part in the build. -->\n");
        sb.Append("    <ImportDirectoryBuildProps>false</ImportDirectoryBuildProps>\n");
        sb.Append("    <ImportDirectoryBuildTargets>false</ImportDirectoryBuildTargets>\n");
        sb.Append("    <ImportDirectoryPackagesProps>false</ImportDirectoryPackagesProps>\n");
        sb.Append("  </PropertyGroup>\n");
        sb.Append("  <Import Project=\"").Append(Escape(props)).Append("\" />\n");
        sb.Append("\n");
        sb.Append("  <PropertyGroup>\n");
        foreach (var (name, value) in properties)
            sb.Append("    <").Append(name).Append('>').Append(Escape(value)).Append("</").Append(name).Append(">\n");
        sb.Append("    <!-- The bmodel and config/ go straight into this folder, as llm_convert.py puts them. -->\n");
        sb.Append("    <OutputPath>$(MSBuildProjectDirectory)/</OutputPath>\n");
        sb.Append("  </PropertyGroup>\n");
        sb.Append("\n");
        sb.Append("  <Import Project=\"").Append(Escape(targets)).Append("\" />\n");
        sb.Append("</Project>\n");
        return sb.ToString();
    }

    /// <summary>
    /// Escapes a literal value for a project file: MSBuild's own escapes for the characters it would expand or
    /// split on (<c>% $ @ ; '</c>), then XML's.
    /// </summary>
    public static string Escape(string value)
    {
        var sb = new StringBuilder(value.Length);
        foreach (char c in value)
        {
            sb.Append(c switch
            {
                '%' => "%25",
                '$' => "%24",
                '@' => "%40",
                ';' => "%3B",
                '\'' => "%27",
                _ => c.ToString(),
            });
        }
        return SecurityElement.Escape(sb.ToString());
    }

    private static string Int(int v) => v.ToString(CultureInfo.InvariantCulture);
    private static string Bool(bool v) => v ? "true" : "false";
}
