import java.io.File;
import java.math.BigDecimal;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;

import stillmotion.client.ApiClient;
import stillmotion.client.ApiException;
import stillmotion.client.api.JobsApi;
import stillmotion.client.api.PlanApi;
import stillmotion.client.model.Interpolator;
import stillmotion.client.model.JobOut;
import stillmotion.client.model.JobStatus;
import stillmotion.client.model.PlanOut;
import stillmotion.client.model.ResolvedRequestOut;

/**
 * One video through the generated Java client: plan a request, submit it with every numeric field set, poll
 * the job to its end, download the video. Usage: {@code java GenerateVideo BASE_URL IMAGE OUTPUT.mp4}; the
 * bearer token, when the server has one, comes from STILLMOTION_API_TOKEN. Prints the job as JSON at the end.
 */
public class GenerateVideo {
    static final String MODEL = "tiny-i2vgen-xl"; // built in, no download (its video is noise)

    public static void main(String[] args) throws Exception {
        ApiClient client = new ApiClient();
        client.updateBaseUri(args[0]);
        String token = System.getenv("STILLMOTION_API_TOKEN");
        if (token != null && !token.isBlank()) {
            client.setRequestInterceptor(request -> request.header("Authorization", "Bearer " + token));
        }
        JobsApi jobs = new JobsApi(client);
        File image = new File(args[1]);

        // The plan takes interpolate_fps (the other way to ask for interpolation than the job's `interpolate`).
        PlanOut plan = new PlanApi(client).planJob(
                "waves roll in", null, MODEL, null, 64, 96, 8, 2, new BigDecimal("7.5"), 6,
                4_000_000_000L, null, 12, Interpolator.MINTERPOLATE, image);
        check(plan.getFits(), "the plan fits");
        check(plan.getRequest().getInterpolate() == 2, "interpolate_fps 12 at 6 fps is factor 2");

        // Every numeric field of a job: size, frames, steps, guidance, fps, a seed over 2^31, interpolation.
        JobOut job = jobs.submitJob(
                image, null, "waves roll in", null, MODEL, null, 64, 96, 8, 2, new BigDecimal("7.5"), 6,
                4_000_000_000L, 2, null, Interpolator.MINTERPOLATE);
        while (job.getStatus() == JobStatus.QUEUED || job.getStatus() == JobStatus.RUNNING) {
            Thread.sleep(500); // or follow GET /jobs/{id}/events with an SSE client (docs/api.md)
            job = jobs.getJob(job.getId());
        }
        check(job.getStatus() == JobStatus.SUCCEEDED, "the job succeeded: " + job.getError());
        ResolvedRequestOut ran = job.getRequest();
        check(ran.getHeight() == 64 && ran.getWidth() == 96, "the size asked for");
        check(ran.getNumFrames() == 8 && ran.getNumInferenceSteps() == 2, "frames and steps asked for");
        check(ran.getFps() == 6 && ran.getSeed() == 4_000_000_000L, "fps and seed asked for");
        check(ran.getGuidanceScale().compareTo(new BigDecimal("7.5")) == 0, "guidance asked for");
        check(ran.getInterpolate() == 2, "interpolation asked for");

        File video = jobs.getJobVideo(job.getId());
        Files.move(video.toPath(), Path.of(args[2]), StandardCopyOption.REPLACE_EXISTING);
        check(Files.size(Path.of(args[2])) > 0, "the video has bytes");
        System.out.println(client.getObjectMapper().writeValueAsString(job));
    }

    static void check(boolean ok, String what) {
        if (!ok) {
            throw new IllegalStateException("expected: " + what);
        }
    }
}
