using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace LlmBuild.Core.Diagnostics;

/// <summary>What a progress event says happened.</summary>
[JsonConverter(typeof(JsonStringEnumConverter<BuildEventKind>))]
public enum BuildEventKind
{
    /// <summary>A stage task started (MSBuild did not skip its target as up to date).</summary>
    StageStarted,
    /// <summary>A stage rebuilt one piece (or weight owner) in <see cref="BuildEvent.Seconds"/>.</summary>
    PieceDone,
    /// <summary>A stage found one piece's outputs newer than its inputs and left it alone.</summary>
    PieceUpToDate,
}

/// <summary>
/// One structured progress event of a build. The stage tasks append them, one JSON object per line, to the file the
/// <c>LlmBuildProgressFile</c> property names; <c>llmbuild convert</c> reads that file for its progress display, so the
/// display never depends on the wording of log messages.
/// </summary>
public sealed record BuildEvent(BuildEventKind Kind, string Stage, string? Piece = null, double? Seconds = null)
{
    private static readonly JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    };

    public string ToJsonLine() => JsonSerializer.Serialize(this, Json);

    /// <summary>The event a line holds, or null for a line that is not one (a torn or foreign line is skipped, not fatal).</summary>
    public static BuildEvent? Parse(string line)
    {
        try
        {
            return JsonSerializer.Deserialize<BuildEvent>(line, Json) is { Stage.Length: > 0 } e ? e : null;
        }
        catch (JsonException)
        {
            return null;
        }
    }
}

/// <summary>Appends events to a progress file; safe to call from several threads of one process.</summary>
public static class BuildEventLog
{
    private static readonly Lock Gate = new();

    public static void Append(string path, BuildEvent e)
    {
        byte[] line = Encoding.UTF8.GetBytes(e.ToJsonLine() + "\n");
        lock (Gate)
        {
            // One write per event, so a reader polling the file sees whole lines (or a tail it keeps for later).
            using var stream = new FileStream(path, FileMode.Append, FileAccess.Write, FileShare.ReadWrite | FileShare.Delete);
            stream.Write(line);
        }
    }
}

/// <summary>Reads the events appended to a progress file since the last call, while the build is still writing it.</summary>
public sealed class BuildEventReader(string path)
{
    private long _position;
    /// <summary>Bytes after the last newline read so far: the start of a line still being written.</summary>
    private byte[] _tail = [];

    public IReadOnlyList<BuildEvent> ReadNew()
    {
        var events = new List<BuildEvent>();
        if (!File.Exists(path)) return events;
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
        long length = stream.Length;
        if (length <= _position) return events;
        stream.Position = _position;
        byte[] bytes = new byte[_tail.Length + (length - _position)];
        _tail.CopyTo(bytes, 0);
        stream.ReadExactly(bytes.AsSpan(_tail.Length));
        _position = length;
        int end = Array.LastIndexOf(bytes, (byte)'\n');
        if (end < 0)
        {
            _tail = bytes;
            return events;
        }
        _tail = bytes[(end + 1)..];
        foreach (string line in Encoding.UTF8.GetString(bytes, 0, end).Split('\n'))
            if (BuildEvent.Parse(line) is { } e) events.Add(e);
        return events;
    }
}
