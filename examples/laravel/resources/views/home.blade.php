Hello from Laravel {{ app()->version() }} on ppm: visit {{ $visits }}, worker {{ $worker }}
