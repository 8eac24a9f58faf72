// A file-lines source and sink for the Kafka Connect distributed-mode test, compiled by the test
// with javac against connect-api from Kafka's libs (connect-file, Kafka's FileStreamSource/Sink, is
// not in the Maven repository this project reaches). The source's offset is the line number, kept
// by Connect in its offset topic; the sink appends each record's value as a line and flushes.
import java.io.BufferedWriter;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Collection;
import java.util.List;
import java.util.Map;
import org.apache.kafka.common.config.ConfigDef;
import org.apache.kafka.connect.connector.Task;
import org.apache.kafka.connect.data.Schema;
import org.apache.kafka.connect.sink.SinkConnector;
import org.apache.kafka.connect.sink.SinkRecord;
import org.apache.kafka.connect.sink.SinkTask;
import org.apache.kafka.connect.source.SourceConnector;
import org.apache.kafka.connect.source.SourceRecord;
import org.apache.kafka.connect.source.SourceTask;

public class LineFileConnectors {
  static final ConfigDef CONFIG = new ConfigDef()
      .define("file", ConfigDef.Type.STRING, ConfigDef.Importance.HIGH, "the file")
      .define("topic", ConfigDef.Type.STRING, "", ConfigDef.Importance.HIGH, "source topic");

  public static class Source extends SourceConnector {
    private Map<String, String> props;
    @Override public void start(Map<String, String> p) { props = p; }
    @Override public Class<? extends Task> taskClass() { return SourceTaskImpl.class; }
    @Override public List<Map<String, String>> taskConfigs(int max) { return List.of(props); }
    @Override public void stop() {}
    @Override public ConfigDef config() { return CONFIG; }
    @Override public String version() { return "1"; }
  }

  public static class SourceTaskImpl extends SourceTask {
    private Path file;
    private String topic;
    private long next;
    private Map<String, String> partition;
    @Override public String version() { return "1"; }
    @Override public void start(Map<String, String> p) {
      file = Path.of(p.get("file"));
      topic = p.get("topic");
      partition = Map.of("file", file.toString());
      Map<String, Object> off = context.offsetStorageReader().offset(partition);
      next = off == null ? 0 : ((Number) off.get("line")).longValue() + 1;
      System.out.println("LINESOURCE resume at line " + next);
    }
    @Override public List<SourceRecord> poll() throws InterruptedException {
      List<String> lines;
      try {
        lines = Files.exists(file) ? Files.readAllLines(file, StandardCharsets.UTF_8) : List.of();
      } catch (IOException e) {
        throw new org.apache.kafka.connect.errors.ConnectException(e);
      }
      List<SourceRecord> out = new ArrayList<>();
      for (; next < lines.size(); next++) {
        out.add(new SourceRecord(partition, Map.of("line", next), topic, null, null, null,
            Schema.STRING_SCHEMA, lines.get((int) next)));
      }
      if (out.isEmpty()) {
        Thread.sleep(200);
        return null;
      }
      return out;
    }
    @Override public void stop() {}
  }

  public static class Sink extends SinkConnector {
    private Map<String, String> props;
    @Override public void start(Map<String, String> p) { props = p; }
    @Override public Class<? extends Task> taskClass() { return SinkTaskImpl.class; }
    @Override public List<Map<String, String>> taskConfigs(int max) { return List.of(props); }
    @Override public void stop() {}
    @Override public ConfigDef config() { return CONFIG; }
    @Override public String version() { return "1"; }
  }

  public static class SinkTaskImpl extends SinkTask {
    private BufferedWriter out;
    @Override public String version() { return "1"; }
    @Override public void start(Map<String, String> p) {
      try {
        out = Files.newBufferedWriter(Path.of(p.get("file")), StandardCharsets.UTF_8,
            StandardOpenOption.CREATE, StandardOpenOption.APPEND);
      } catch (IOException e) {
        throw new org.apache.kafka.connect.errors.ConnectException(e);
      }
    }
    @Override public void put(Collection<SinkRecord> records) {
      try {
        for (SinkRecord r : records) {
          out.write(String.valueOf(r.value()));
          out.newLine();
        }
        out.flush();
      } catch (IOException e) {
        throw new org.apache.kafka.connect.errors.ConnectException(e);
      }
    }
    @Override public void stop() {
      try {
        out.close();
      } catch (IOException e) {
        // closing at shutdown: nothing left to do
      }
    }
  }
}
