// SPDX-License-Identifier: GPL-2.0
/*
 * vabc dm-user: a device-mapper target that forwards block I/O to a
 * userspace daemon through a misc character device.
 *
 * Written from scratch for the vabc project. It implements the userspace ABI
 * described in dm-user-uapi.h (the one snapuserd speaks).
 *
 * Table line:  <start> <length> user <offset> <length> <misc_name>
 *   <offset>    added to the sector of every request sent to the daemon
 *   <length>    informational (must parse as a number)
 *   <misc_name> control node /dev/dm-user/<misc_name>
 *
 * Objects:
 *   dmu_core    one per misc name; shared by every table (live or inactive)
 *               of ONE mapped device that names it, so a reload keeps the
 *               daemon's channels. Another mapped device cannot use the name
 *               while it exists. Refcounted: one reference for all targets
 *               together, one per open channel.
 *   dmu_channel one per open() of /dev/dm-user/<name>. A message read on a
 *               channel is answered on that channel. When a channel closes,
 *               its unanswered messages go back to the core's queue so that
 *               another (or a restarted) daemon can serve them.
 *   dmu_msg     lives in the per-bio data of the dm clone bio.
 *
 * Message life: map() puts a message on the queue (or, when
 * dm_user_max_outstanding messages are already queued or taken, on the
 * backlog, which the daemon cannot see; map() never sleeps). A channel's
 * read() takes it (rd_msg) and, once header and payload are read, parks it on
 * the channel's await list; write() finds it there by seq, checks the answer
 * header against the request and, for a READ, copies the payload into the bio
 * (wr_msg). Completion frees an outstanding slot and promotes the backlog.
 *
 * Answer framing (write side):
 *   - an answer header must echo the request's seq, sector, len and flags,
 *     and carry SUCCESS, ERROR or UNSUPPORTED, or the request fails with EIO
 *     and write() returns EINVAL;
 *   - one write() (or writev(), or io_uring write) carries bytes of one
 *     answer only: bytes beyond the end of the answer fail it with EIO
 *     (EINVAL), so bytes of a following header never reach a bio;
 *   - a payload that stops short is detected when the same channel reads
 *     again, or when a new write() starts with a header that exactly matches
 *     another request awaiting an answer on this channel: the short answer
 *     fails with EIO;
 *   - requests older than dm_user_request_timeout_msec (queued, being read,
 *     awaiting an answer, or with a partial answer) fail with EIO. A late
 *     answer to such a request gets EINVAL; the daemon's read stream stays
 *     framed (a message whose read was cut short is padded with zeros).
 *
 * Daemon loss: when no channel is open for daemon_timeout_msec while I/O is
 * queued (or after the last channel closed), all queued I/O fails with EIO and
 * new I/O fails at once until a channel is opened again. After the last table
 * using the name is destroyed, read() and write() return -ENOTBLK.
 *
 * Locking: core->lock (spinlock) guards the queue, the backlog, the channel
 * list, the counters, each channel's await list and the rd_msg/wr_msg
 * pointers. ch->rd_mu serialises read() on a channel (the holder may touch
 * rd_msg's bio), ch->wr_mu serialises write() (wr_msg's bio and the header
 * accumulator). Lock order: rd_mu, then wr_mu, then core->lock; the request
 * reaper only try-locks the mutexes. Data copies to and from user memory
 * happen under the mutexes only, never under the spinlock.
 */
#include <linux/module.h>
#include <linux/init.h>
#include <linux/kernel.h>
#include <linux/slab.h>
#include <linux/list.h>
#include <linux/mutex.h>
#include <linux/spinlock.h>
#include <linux/wait.h>
#include <linux/workqueue.h>
#include <linux/miscdevice.h>
#include <linux/fs.h>
#include <linux/poll.h>
#include <linux/uio.h>
#include <linux/uaccess.h>
#include <linux/bio.h>
#include <linux/highmem.h>
#include <linux/kref.h>
#include <linux/jiffies.h>
#include <linux/device-mapper.h>

#include "dm-user-uapi.h"

#define DM_MSG_PREFIX "user"

static unsigned int daemon_timeout_msec = 4000;
module_param_named(dm_user_daemon_timeout_msec, daemon_timeout_msec, uint, 0644);
MODULE_PARM_DESC(dm_user_daemon_timeout_msec,
		 "fail queued I/O when no daemon has the control node open for this long (ms)");

static unsigned int request_timeout_msec = 30000;
module_param_named(dm_user_request_timeout_msec, request_timeout_msec, uint, 0644);
MODULE_PARM_DESC(dm_user_request_timeout_msec,
		 "fail a request the daemon has not answered this long after it was queued (ms, 0 = never)");

static unsigned int max_outstanding = 128;
module_param_named(dm_user_max_outstanding, max_outstanding, uint, 0644);
MODULE_PARM_DESC(dm_user_max_outstanding,
		 "messages per target that may be queued or in flight; further I/O waits in the kernel");

static unsigned int max_io_sectors = 2048;
module_param_named(dm_user_max_io_sectors, max_io_sectors, uint, 0444);
MODULE_PARM_DESC(dm_user_max_io_sectors,
		 "largest request sent to the daemon, in sectors (rounded down to a multiple of 8)");

static LIST_HEAD(dmu_cores);
static DEFINE_MUTEX(dmu_cores_mu); /* guards dmu_cores and misc (de)registration */

struct dmu_core {
	struct list_head node;		/* in dmu_cores */
	struct kref ref;
	unsigned int ntargets;		/* guarded by dmu_cores_mu */
	struct mapped_device *md;	/* the only device whose tables may use the name */
	char name[DM_NAME_LEN];
	char nodename[DM_NAME_LEN + 16];
	char miscname[DM_NAME_LEN + 16];
	struct miscdevice misc;

	spinlock_t lock;		/* guards everything below */
	struct list_head queue;		/* messages nobody has taken yet */
	struct list_head backlog;	/* over the outstanding limit; not visible yet */
	struct list_head channels;
	unsigned int nchannels;
	unsigned int outstanding;	/* queued + taken, not yet completed */
	u64 next_seq;
	bool dead;			/* last table destroyed */
	bool no_daemon;			/* timeout fired with no channel open */

	wait_queue_head_t rd_wq;	/* readers waiting for messages */
	struct delayed_work timeout_work;	/* daemon loss */
	struct delayed_work reap_work;		/* request timeout */
};

struct dmu_channel {
	struct list_head node;		/* in core->channels */
	struct dmu_core *core;
	struct list_head await;		/* fully read, waiting for an answer */

	struct mutex rd_mu;
	struct dmu_msg *rd_msg;		/* partly read; set/cleared under core->lock */
	size_t rd_pad;			/* zero bytes owed for a message cut short */

	struct mutex wr_mu;
	struct dmu_msg *wr_msg;		/* answer header seen, payload pending */
	size_t wr_skip;			/* payload bytes of a timed-out answer to drop */
	u8 hdr[DM_USER_HEADER_SIZE];
	unsigned int hdr_got;
};

struct dmu_msg {
	struct list_head node;
	struct bio *bio;
	struct bvec_iter iter0;		/* the bio's data, as mapped */
	struct bvec_iter pos;		/* progress of the payload copy */
	u64 seq, type, flags, sector, len;
	u8 hdr[DM_USER_HEADER_SIZE];	/* encoded request header */
	unsigned long queued;		/* jiffies when the daemon could first see it */
	size_t off;			/* bytes of header+payload read so far */
	size_t woff;			/* answer payload bytes received */
};

struct dmu_target {
	struct dmu_core *core;
	u64 offset;
	u64 length;
};

/* Decoded answer header. */
struct dmu_answer {
	u64 seq, type, flags, sector, len;
};

/* ---- core lifetime ---------------------------------------------------- */

static void dmu_core_free(struct kref *ref)
{
	kfree(container_of(ref, struct dmu_core, ref));
}

static void dmu_core_put(struct dmu_core *core)
{
	kref_put(&core->ref, dmu_core_free);
}

static unsigned int dmu_limit(void)
{
	return max(1u, READ_ONCE(max_outstanding));
}

/* ---- queueing --------------------------------------------------------- */

static void dmu_encode_header(struct dmu_msg *msg)
{
	__le64 *p = (__le64 *)msg->hdr;

	p[0] = cpu_to_le64(msg->seq);
	p[1] = cpu_to_le64(msg->type);
	p[2] = cpu_to_le64(msg->flags);
	p[3] = cpu_to_le64(msg->sector);
	p[4] = cpu_to_le64(msg->len);
}

static void dmu_schedule_reap_locked(struct dmu_core *core)
{
	unsigned int ms = READ_ONCE(request_timeout_msec);

	if (!core->dead && ms)
		schedule_delayed_work(&core->reap_work,
				      max(msecs_to_jiffies(ms / 4), msecs_to_jiffies(50)));
}

static void dmu_schedule_timeout_locked(struct dmu_core *core)
{
	if (!core->dead)
		schedule_delayed_work(&core->timeout_work,
				      msecs_to_jiffies(READ_ONCE(daemon_timeout_msec)));
}

/* Make msg visible to the daemon. Called with core->lock held. */
static void dmu_enqueue_locked(struct dmu_core *core, struct dmu_msg *msg)
{
	core->outstanding++;
	msg->seq = core->next_seq++;
	msg->queued = jiffies;
	dmu_encode_header(msg);
	list_add_tail(&msg->node, &core->queue);
	if (core->nchannels == 0)
		dmu_schedule_timeout_locked(core);
	dmu_schedule_reap_locked(core);
}

/* Move backlog messages into free slots; true if any moved. */
static bool dmu_promote_locked(struct dmu_core *core)
{
	bool moved = false;

	while (!list_empty(&core->backlog) && core->outstanding < dmu_limit()) {
		struct dmu_msg *msg = list_first_entry(&core->backlog, struct dmu_msg, node);

		list_del_init(&msg->node);
		dmu_enqueue_locked(core, msg);
		moved = true;
	}
	return moved;
}

/* ---- message completion ----------------------------------------------- */

/* Caller has already unlinked msg from every list and holds no lock. */
static void dmu_complete(struct dmu_core *core, struct dmu_msg *msg, blk_status_t st)
{
	struct bio *bio = msg->bio;
	bool moved;

	spin_lock(&core->lock);
	core->outstanding--;
	moved = dmu_promote_locked(core);
	spin_unlock(&core->lock);
	if (moved)
		wake_up_interruptible(&core->rd_wq);
	bio->bi_status = st;
	bio_endio(bio);
}

static void dmu_fail_list(struct dmu_core *core, struct list_head *list)
{
	struct dmu_msg *msg, *tmp;

	list_for_each_entry_safe(msg, tmp, list, node) {
		list_del_init(&msg->node);
		dmu_complete(core, msg, BLK_STS_IOERR);
	}
}

/* Backlog messages never held a slot: end them without touching the count. */
static void dmu_fail_backlog(struct list_head *list)
{
	struct dmu_msg *msg, *tmp;

	list_for_each_entry_safe(msg, tmp, list, node) {
		list_del_init(&msg->node);
		msg->bio->bi_status = BLK_STS_IOERR;
		bio_endio(msg->bio);
	}
}

static void dmu_msg_rewind(struct dmu_msg *msg)
{
	msg->off = 0;
	msg->woff = 0;
	msg->pos = msg->iter0;
}

static size_t dmu_msg_total(const struct dmu_msg *msg)
{
	return DM_USER_HEADER_SIZE + (msg->type == DM_USER_REQ_MAP_WRITE ? msg->len : 0);
}

/* ---- daemon timeout --------------------------------------------------- */

static void dmu_timeout_fn(struct work_struct *work)
{
	struct dmu_core *core = container_of(to_delayed_work(work), struct dmu_core,
					     timeout_work);
	LIST_HEAD(failed);
	LIST_HEAD(backlog);

	spin_lock(&core->lock);
	if (core->dead || core->nchannels > 0) {
		spin_unlock(&core->lock);
		return;
	}
	core->no_daemon = true;
	list_splice_init(&core->queue, &failed);
	list_splice_init(&core->backlog, &backlog);
	spin_unlock(&core->lock);
	if (!list_empty(&failed))
		DMWARN("%s: no daemon for %u ms, failing queued I/O", core->name,
		       READ_ONCE(daemon_timeout_msec));
	dmu_fail_backlog(&backlog);
	dmu_fail_list(core, &failed);
}

/* ---- request timeout -------------------------------------------------- */

static bool dmu_expired(const struct dmu_msg *msg, unsigned long limit)
{
	return time_after_eq(jiffies, msg->queued + limit);
}

/*
 * Fail every request older than request_timeout_msec, wherever it is. A
 * message being read or answered is only taken when its channel's mutex is
 * free (try-lock; otherwise the next round gets it), so nobody is copying
 * to or from its bio.
 */
static void dmu_reap_fn(struct work_struct *work)
{
	struct dmu_core *core = container_of(to_delayed_work(work), struct dmu_core,
					     reap_work);
	unsigned int ms = READ_ONCE(request_timeout_msec);
	unsigned long limit = msecs_to_jiffies(ms);
	struct dmu_msg *msg, *tmp;
	struct dmu_channel *ch;
	unsigned int n = 0;
	LIST_HEAD(failed);

	if (!ms)
		return;
	spin_lock(&core->lock);
	if (core->dead) {
		spin_unlock(&core->lock);
		return;
	}
	list_for_each_entry_safe(msg, tmp, &core->queue, node)
		if (dmu_expired(msg, limit))
			list_move_tail(&msg->node, &failed);
	list_for_each_entry(ch, &core->channels, node) {
		list_for_each_entry_safe(msg, tmp, &ch->await, node)
			if (dmu_expired(msg, limit))
				list_move_tail(&msg->node, &failed);
		msg = ch->rd_msg;
		if (msg && dmu_expired(msg, limit) && mutex_trylock(&ch->rd_mu)) {
			if (ch->rd_msg == msg) {
				/* Keep the reader's stream framed: zeros for the rest. */
				ch->rd_pad = msg->off ? dmu_msg_total(msg) - msg->off : 0;
				ch->rd_msg = NULL;
				list_add_tail(&msg->node, &failed);
			}
			mutex_unlock(&ch->rd_mu);
		}
		msg = ch->wr_msg;
		if (msg && dmu_expired(msg, limit) && mutex_trylock(&ch->wr_mu)) {
			if (ch->wr_msg == msg) {
				ch->wr_skip = msg->len - msg->woff;
				ch->wr_msg = NULL;
				list_add_tail(&msg->node, &failed);
			}
			mutex_unlock(&ch->wr_mu);
		}
	}
	spin_unlock(&core->lock);

	list_for_each_entry(msg, &failed, node)
		n++;
	if (n)
		DMWARN_LIMIT("%s: %u request(s) unanswered for %u ms, failing them",
			     core->name, n, ms);
	dmu_fail_list(core, &failed);

	spin_lock(&core->lock);
	if (core->outstanding > 0)
		dmu_schedule_reap_locked(core);
	spin_unlock(&core->lock);
}

/* ---- map -------------------------------------------------------------- */

static u64 dmu_flags(blk_opf_t opf)
{
	static const struct { blk_opf_t req; u64 flag; } tab[] = {
		{ REQ_FAILFAST_DEV, DM_USER_REQ_MAP_FLAG_FAILFAST_DEV },
		{ REQ_FAILFAST_TRANSPORT, DM_USER_REQ_MAP_FLAG_FAILFAST_TRANSPORT },
		{ REQ_FAILFAST_DRIVER, DM_USER_REQ_MAP_FLAG_FAILFAST_DRIVER },
		{ REQ_SYNC, DM_USER_REQ_MAP_FLAG_SYNC },
		{ REQ_META, DM_USER_REQ_MAP_FLAG_META },
		{ REQ_PRIO, DM_USER_REQ_MAP_FLAG_PRIO },
		{ REQ_NOMERGE, DM_USER_REQ_MAP_FLAG_NOMERGE },
		{ REQ_IDLE, DM_USER_REQ_MAP_FLAG_IDLE },
		{ REQ_INTEGRITY, DM_USER_REQ_MAP_FLAG_INTEGRITY },
		{ REQ_FUA, DM_USER_REQ_MAP_FLAG_FUA },
		{ REQ_PREFLUSH, DM_USER_REQ_MAP_FLAG_PREFLUSH },
		{ REQ_RAHEAD, DM_USER_REQ_MAP_FLAG_RAHEAD },
		{ REQ_BACKGROUND, DM_USER_REQ_MAP_FLAG_BACKGROUND },
		{ REQ_NOWAIT, DM_USER_REQ_MAP_FLAG_NOWAIT },
		{ REQ_NOUNMAP, DM_USER_REQ_MAP_FLAG_NOUNMAP },
		{ REQ_DRV, DM_USER_REQ_MAP_FLAG_DRV },
		{ REQ_SWAP, DM_USER_REQ_MAP_FLAG_SWAP },
	};
	u64 out = 0;
	size_t i;

	for (i = 0; i < ARRAY_SIZE(tab); i++)
		if (opf & tab[i].req)
			out |= tab[i].flag;
	return out;
}

/*
 * map() runs under dm's SRCU read lock, which suspend waits for: it never
 * sleeps. Over the outstanding limit the bio waits on the backlog instead.
 */
static int dmu_map(struct dm_target *ti, struct bio *bio)
{
	struct dmu_target *t = ti->private;
	struct dmu_core *core = t->core;
	struct dmu_msg *msg = dm_per_bio_data(bio, sizeof(struct dmu_msg));

	switch (bio_op(bio)) {
	case REQ_OP_READ:
		msg->type = DM_USER_REQ_MAP_READ;
		break;
	case REQ_OP_WRITE:
		if (bio->bi_opf & REQ_PREFLUSH && !bio_has_data(bio))
			msg->type = DM_USER_REQ_MAP_FLUSH;
		else
			msg->type = DM_USER_REQ_MAP_WRITE;
		break;
	case REQ_OP_FLUSH:
		msg->type = DM_USER_REQ_MAP_FLUSH;
		break;
	case REQ_OP_DISCARD:
		msg->type = DM_USER_REQ_MAP_DISCARD;
		break;
	case REQ_OP_SECURE_ERASE:
		msg->type = DM_USER_REQ_MAP_SECURE_ERASE;
		break;
	case REQ_OP_WRITE_ZEROES:
		msg->type = DM_USER_REQ_MAP_WRITE_ZEROES;
		break;
	default:
		return DM_MAPIO_KILL;
	}

	INIT_LIST_HEAD(&msg->node);
	msg->bio = bio;
	msg->flags = dmu_flags(bio->bi_opf);
	/* An empty flush has no meaningful sector; report 0. */
	if (msg->type == DM_USER_REQ_MAP_FLUSH)
		msg->sector = 0;
	else
		msg->sector = t->offset + dm_target_offset(ti, bio->bi_iter.bi_sector);
	msg->len = bio->bi_iter.bi_size;
	msg->iter0 = bio->bi_iter;
	dmu_msg_rewind(msg);

	spin_lock(&core->lock);
	if (core->dead || (core->no_daemon && core->nchannels == 0)) {
		spin_unlock(&core->lock);
		return DM_MAPIO_KILL;
	}
	if (core->outstanding < dmu_limit() && list_empty(&core->backlog)) {
		dmu_enqueue_locked(core, msg);
		spin_unlock(&core->lock);
		wake_up_interruptible(&core->rd_wq);
	} else {
		list_add_tail(&msg->node, &core->backlog);
		spin_unlock(&core->lock);
	}
	return DM_MAPIO_SUBMITTED;
}

/* ---- the control node --------------------------------------------------- */

static int dmu_open(struct inode *inode, struct file *file)
{
	struct dmu_core *core = container_of(file->private_data, struct dmu_core, misc);
	struct dmu_channel *ch;

	ch = kzalloc(sizeof(*ch), GFP_KERNEL);
	if (!ch)
		return -ENOMEM;
	INIT_LIST_HEAD(&ch->await);
	mutex_init(&ch->rd_mu);
	mutex_init(&ch->wr_mu);
	ch->core = core;

	/*
	 * misc_open() calls us with misc_mtx held, and the last target's
	 * destructor deregisters the misc device (taking misc_mtx) before it
	 * drops its reference, so core is alive here.
	 */
	spin_lock(&core->lock);
	if (core->dead) {
		spin_unlock(&core->lock);
		kfree(ch);
		return -ENOTBLK;
	}
	kref_get(&core->ref);
	list_add_tail(&ch->node, &core->channels);
	core->nchannels++;
	core->no_daemon = false;
	spin_unlock(&core->lock);
	cancel_delayed_work(&core->timeout_work);

	file->private_data = ch;
	return stream_open(inode, file);
}

static int dmu_release(struct inode *inode, struct file *file)
{
	struct dmu_channel *ch = file->private_data;
	struct dmu_core *core = ch->core;
	LIST_HEAD(failed);
	LIST_HEAD(back);
	bool dead;

	/* No read() or write() runs any more; the reaper only try-locks. */
	mutex_lock(&ch->rd_mu);
	mutex_lock(&ch->wr_mu);
	spin_lock(&core->lock);
	list_del(&ch->node);
	core->nchannels--;
	dead = core->dead;
	if (ch->wr_msg)
		list_add(&ch->wr_msg->node, &back);
	if (ch->rd_msg)
		list_add(&ch->rd_msg->node, &back);
	list_splice_init(&ch->await, &back);
	ch->wr_msg = NULL;
	ch->rd_msg = NULL;
	if (dead) {
		list_splice_init(&back, &failed);
	} else {
		struct dmu_msg *msg;

		/* Unanswered messages go back to the front of the queue. */
		list_for_each_entry(msg, &back, node)
			dmu_msg_rewind(msg);
		list_splice_init(&back, &core->queue);
		if (core->nchannels == 0)
			dmu_schedule_timeout_locked(core);
	}
	spin_unlock(&core->lock);
	mutex_unlock(&ch->wr_mu);
	mutex_unlock(&ch->rd_mu);

	wake_up_interruptible(&core->rd_wq);
	dmu_fail_list(core, &failed);
	kfree(ch);
	dmu_core_put(core);
	return 0;
}

/* Take the next message for this channel; called with ch->rd_mu held. */
static int dmu_take(struct dmu_channel *ch, bool nonblock)
{
	struct dmu_core *core = ch->core;

	for (;;) {
		int err;

		spin_lock(&core->lock);
		if (core->dead) {
			spin_unlock(&core->lock);
			return -ENOTBLK;
		}
		if (!list_empty(&core->queue)) {
			struct dmu_msg *msg = list_first_entry(&core->queue, struct dmu_msg, node);

			list_del_init(&msg->node);
			ch->rd_msg = msg;
			spin_unlock(&core->lock);
			return 0;
		}
		spin_unlock(&core->lock);
		if (nonblock)
			return -EAGAIN;
		err = wait_event_interruptible(core->rd_wq,
			READ_ONCE(core->dead) || !list_empty_careful(&core->queue));
		if (err)
			return err;
	}
}

/*
 * The daemon reads again on a channel whose answer payload stopped short: that
 * answer is over, and its request fails. Called with ch->rd_mu held.
 */
static void dmu_end_short_answer(struct dmu_channel *ch)
{
	struct dmu_core *core = ch->core;
	struct dmu_msg *msg;

	if (!READ_ONCE(ch->wr_msg) && !READ_ONCE(ch->wr_skip))
		return;
	mutex_lock(&ch->wr_mu);
	spin_lock(&core->lock);
	msg = ch->wr_msg;
	ch->wr_msg = NULL;
	ch->wr_skip = 0;
	spin_unlock(&core->lock);
	mutex_unlock(&ch->wr_mu);
	if (msg) {
		DMWARN_LIMIT("%s: answer to seq %llu ended after %zu of %llu payload bytes",
			     core->name, msg->seq, msg->woff, msg->len);
		dmu_complete(core, msg, BLK_STS_IOERR);
	}
}

static ssize_t dmu_read_iter(struct kiocb *iocb, struct iov_iter *to)
{
	struct file *file = iocb->ki_filp;
	struct dmu_channel *ch = file->private_data;
	struct dmu_core *core = ch->core;
	bool nonblock = (file->f_flags & O_NONBLOCK) || (iocb->ki_flags & IOCB_NOWAIT);
	struct dmu_msg *msg;
	size_t total, done = 0;
	ssize_t ret = 0;

	if (!iov_iter_count(to))
		return 0;
	if (mutex_lock_interruptible(&ch->rd_mu))
		return -ERESTARTSYS;
	dmu_end_short_answer(ch);
	if (ch->rd_pad) {
		/* The rest of a message that timed out while being read. */
		size_t n = iov_iter_zero(min(ch->rd_pad, iov_iter_count(to)), to);

		ch->rd_pad -= n;
		ret = n ? (ssize_t)n : -EFAULT;
		goto out;
	}
	if (!ch->rd_msg) {
		ret = dmu_take(ch, nonblock);
		if (ret)
			goto out;
	}
	msg = ch->rd_msg;
	total = dmu_msg_total(msg);

	/* One read() (readv(), io_uring read) never spans two messages. */
	while (iov_iter_count(to) && msg->off < total) {
		size_t n, got;

		if (msg->off < DM_USER_HEADER_SIZE) {
			u8 hdr[DM_USER_HEADER_SIZE];

			/*
			 * The message lives in dm's per-bio data, a slab cache
			 * without a usercopy whitelist: hardened usercopy
			 * refuses to copy from it directly, so bounce through
			 * the stack.
			 */
			memcpy(hdr, msg->hdr, sizeof(hdr));
			n = min_t(size_t, iov_iter_count(to), DM_USER_HEADER_SIZE - msg->off);
			got = copy_to_iter(hdr + msg->off, n, to);
		} else {
			struct bio_vec bv = bio_iter_iovec(msg->bio, msg->pos);
			void *kaddr;

			n = min_t(size_t, iov_iter_count(to), bv.bv_len);
			kaddr = bvec_kmap_local(&bv);
			got = copy_to_iter(kaddr, n, to);
			kunmap_local(kaddr);
			if (got)
				bio_advance_iter_single(msg->bio, &msg->pos, got);
		}
		msg->off += got;
		done += got;
		if (got < n) {
			ret = -EFAULT;
			break;
		}
	}
	if (msg->off == total) {
		spin_lock(&core->lock);
		list_add_tail(&msg->node, &ch->await);
		ch->rd_msg = NULL;
		spin_unlock(&core->lock);
	}
	if (done)
		ret = done;
out:
	mutex_unlock(&ch->rd_mu);
	return ret;
}

static void dmu_decode_answer(const u8 *b, struct dmu_answer *a)
{
	const __le64 *h = (const __le64 *)b;

	a->seq = le64_to_cpu(h[0]);
	a->type = le64_to_cpu(h[1]);
	a->flags = le64_to_cpu(h[2]);
	a->sector = le64_to_cpu(h[3]);
	a->len = le64_to_cpu(h[4]);
}

static bool dmu_answer_matches(const struct dmu_answer *a, const struct dmu_msg *msg)
{
	return a->sector == msg->sector && a->len == msg->len && a->flags == msg->flags;
}

/*
 * Unlink and return the message awaiting an answer with this seq on ch. With
 * exact, only a message whose fields all match (and a known response type).
 */
static struct dmu_msg *dmu_find_awaited(struct dmu_channel *ch, const struct dmu_answer *a,
					bool exact)
{
	struct dmu_core *core = ch->core;
	struct dmu_msg *msg, *found = NULL;

	if (exact && a->type > DM_USER_RESP_UNSUPPORTED)
		return NULL;
	spin_lock(&core->lock);
	list_for_each_entry(msg, &ch->await, node) {
		if (msg->seq == a->seq) {
			if (!exact || dmu_answer_matches(a, msg)) {
				list_del_init(&msg->node);
				found = msg;
			}
			break;
		}
	}
	spin_unlock(&core->lock);
	return found;
}

static void dmu_set_wr_msg(struct dmu_channel *ch, struct dmu_msg *msg)
{
	spin_lock(&ch->core->lock);
	ch->wr_msg = msg;
	spin_unlock(&ch->core->lock);
}

/* Copy up to n answer payload bytes into wr_msg's bio; returns bytes copied. */
static size_t dmu_copy_payload(struct dmu_msg *msg, struct iov_iter *from, size_t n)
{
	size_t done = 0;

	while (done < n) {
		struct bio_vec bv = bio_iter_iovec(msg->bio, msg->pos);
		size_t k = min_t(size_t, n - done, bv.bv_len);
		size_t got;
		void *kaddr;

		kaddr = bvec_kmap_local(&bv);
		got = copy_from_iter(kaddr, k, from);
		kunmap_local(kaddr);
		if (got)
			bio_advance_iter_single(msg->bio, &msg->pos, got);
		msg->woff += got;
		done += got;
		if (got < k)
			break;
	}
	return done;
}

static ssize_t dmu_bad_answer(struct dmu_core *core, struct dmu_msg *msg, const char *why)
{
	DMWARN_LIMIT("%s: bad answer to seq %llu (%s): request failed", core->name,
		     msg->seq, why);
	dmu_complete(core, msg, BLK_STS_IOERR);
	return -EINVAL;
}

/*
 * One write() carries bytes of one answer: the header (or the rest of a
 * header split over several writes) and payload, or more payload of the
 * answer in progress. See the framing rules at the top of the file.
 */
static ssize_t dmu_write_iter(struct kiocb *iocb, struct iov_iter *from)
{
	struct file *file = iocb->ki_filp;
	struct dmu_channel *ch = file->private_data;
	struct dmu_core *core = ch->core;
	size_t count = iov_iter_count(from);
	struct dmu_answer a;
	struct dmu_msg *msg;
	size_t n, rest;
	ssize_t ret;

	if (!count)
		return 0;
	if (mutex_lock_interruptible(&ch->wr_mu))
		return -ERESTARTSYS;
	if (READ_ONCE(core->dead)) {
		ret = -ENOTBLK;
		goto out;
	}

	/* A new answer header where more payload was due: the last answer was short. */
	if (ch->hdr_got == 0 && (ch->wr_msg || ch->wr_skip) && count >= DM_USER_HEADER_SIZE) {
		struct iov_iter peek = *from;
		u8 hdr[DM_USER_HEADER_SIZE];

		if (copy_from_iter(hdr, sizeof(hdr), &peek) == sizeof(hdr)) {
			dmu_decode_answer(hdr, &a);
			msg = dmu_find_awaited(ch, &a, true);
			if (msg) {
				struct dmu_msg *old = ch->wr_msg;

				/* Put it back: the header is parsed below as usual. */
				spin_lock(&core->lock);
				list_add(&msg->node, &ch->await);
				ch->wr_msg = NULL;
				ch->wr_skip = 0;
				spin_unlock(&core->lock);
				if (old) {
					DMWARN_LIMIT("%s: answer to seq %llu ended after %zu of %llu payload bytes",
						     core->name, old->seq, old->woff, old->len);
					dmu_complete(core, old, BLK_STS_IOERR);
				}
			}
		}
	}

	if (ch->wr_skip) {
		/* Payload of an answer that came too late. */
		if (count > ch->wr_skip) {
			ch->wr_skip = 0;
			ret = -EINVAL;
			goto out;
		}
		iov_iter_advance(from, count);
		ch->wr_skip -= count;
		ret = count;
		goto out;
	}

	msg = ch->wr_msg;
	if (msg) {
		/* More payload of a READ answer. */
		if (count > msg->len - msg->woff) {
			dmu_set_wr_msg(ch, NULL);
			ret = dmu_bad_answer(core, msg, "payload longer than len");
			goto out;
		}
		n = dmu_copy_payload(msg, from, count);
		if (msg->woff == msg->len) {
			dmu_set_wr_msg(ch, NULL);
			dmu_complete(core, msg, BLK_STS_OK);
		}
		ret = n ? (ssize_t)n : -EFAULT;
		goto out;
	}

	/* (The rest of) an answer header. */
	n = min_t(size_t, count, DM_USER_HEADER_SIZE - ch->hdr_got);
	if (copy_from_iter(ch->hdr + ch->hdr_got, n, from) != n) {
		ret = -EFAULT;
		goto out;
	}
	ch->hdr_got += n;
	if (ch->hdr_got < DM_USER_HEADER_SIZE) {
		ret = n;
		goto out;
	}
	ch->hdr_got = 0;
	rest = count - n;
	dmu_decode_answer(ch->hdr, &a);
	msg = dmu_find_awaited(ch, &a, false);
	if (!msg) {
		ret = -EINVAL;
		goto out;
	}
	if (a.type > DM_USER_RESP_UNSUPPORTED) {
		ret = dmu_bad_answer(core, msg, "unknown response type");
		goto out;
	}
	if (a.sector != msg->sector) {
		ret = dmu_bad_answer(core, msg, "sector differs from the request");
		goto out;
	}
	if (a.len != msg->len) {
		ret = dmu_bad_answer(core, msg, "len differs from the request");
		goto out;
	}
	if (a.flags != msg->flags) {
		ret = dmu_bad_answer(core, msg, "flags differ from the request");
		goto out;
	}
	if (a.type == DM_USER_RESP_SUCCESS && msg->type == DM_USER_REQ_MAP_READ && msg->len > 0) {
		if (rest > msg->len) {
			ret = dmu_bad_answer(core, msg, "payload longer than len");
			goto out;
		}
		msg->woff = 0;
		msg->pos = msg->iter0;
		if (rest) {
			size_t got = dmu_copy_payload(msg, from, rest);

			if (got < rest) {
				/* A fault in the caller's buffer: keep what arrived. */
				dmu_set_wr_msg(ch, msg);
				ret = n + got;
				goto out;
			}
		}
		if (msg->woff == msg->len)
			dmu_complete(core, msg, BLK_STS_OK);
		else
			dmu_set_wr_msg(ch, msg);
		ret = count;
		goto out;
	}
	if (rest) {
		ret = dmu_bad_answer(core, msg, "bytes after a header-only answer");
		goto out;
	}
	switch (a.type) {
	case DM_USER_RESP_SUCCESS:
		dmu_complete(core, msg, BLK_STS_OK);
		break;
	case DM_USER_RESP_UNSUPPORTED:
		dmu_complete(core, msg, BLK_STS_NOTSUPP);
		break;
	default:
		dmu_complete(core, msg, BLK_STS_IOERR);
		break;
	}
	ret = count;
out:
	mutex_unlock(&ch->wr_mu);
	return ret;
}

static __poll_t dmu_poll(struct file *file, poll_table *wait)
{
	struct dmu_channel *ch = file->private_data;
	struct dmu_core *core = ch->core;
	__poll_t mask = EPOLLOUT | EPOLLWRNORM;

	poll_wait(file, &core->rd_wq, wait);
	spin_lock(&core->lock);
	if (core->dead)
		mask |= EPOLLIN | EPOLLRDNORM | EPOLLERR;
	else if (!list_empty(&core->queue) || ch->rd_msg || READ_ONCE(ch->rd_pad))
		mask |= EPOLLIN | EPOLLRDNORM;
	spin_unlock(&core->lock);
	return mask;
}

static const struct file_operations dmu_fops = {
	.owner = THIS_MODULE,
	.open = dmu_open,
	.release = dmu_release,
	.read_iter = dmu_read_iter,
	.write_iter = dmu_write_iter,
	.poll = dmu_poll,
};
/* ---- target constructor / destructor ------------------------------------ */

static struct dmu_core *dmu_core_get_or_create(struct mapped_device *md, const char *name,
					       char **error)
{
	struct dmu_core *core;
	int err;

	list_for_each_entry(core, &dmu_cores, node) {
		if (!strcmp(core->name, name)) {
			/*
			 * Tables of one mapped device share the name (a reload
			 * keeps the daemon); another device must not capture
			 * its I/O or its daemon. core->md stays valid: a table
			 * of that device holds a target reference.
			 */
			if (core->md != md) {
				*error = "misc name in use by another mapped device";
				return ERR_PTR(-EBUSY);
			}
			core->ntargets++;
			return core;
		}
	}
	core = kzalloc(sizeof(*core), GFP_KERNEL);
	if (!core) {
		*error = "out of memory";
		return ERR_PTR(-ENOMEM);
	}
	kref_init(&core->ref);
	core->ntargets = 1;
	core->md = md;
	strscpy(core->name, name, sizeof(core->name));
	snprintf(core->nodename, sizeof(core->nodename), "dm-user/%s", name);
	snprintf(core->miscname, sizeof(core->miscname), "dm-user!%s", name);
	spin_lock_init(&core->lock);
	INIT_LIST_HEAD(&core->queue);
	INIT_LIST_HEAD(&core->backlog);
	INIT_LIST_HEAD(&core->channels);
	init_waitqueue_head(&core->rd_wq);
	INIT_DELAYED_WORK(&core->timeout_work, dmu_timeout_fn);
	INIT_DELAYED_WORK(&core->reap_work, dmu_reap_fn);
	core->next_seq = 1;
	core->misc.minor = MISC_DYNAMIC_MINOR;
	core->misc.name = core->miscname;
	core->misc.nodename = core->nodename;
	core->misc.fops = &dmu_fops;
	core->misc.mode = 0600;
	err = misc_register(&core->misc);
	if (err) {
		kfree(core);
		*error = "cannot register the misc device";
		return ERR_PTR(err);
	}
	list_add_tail(&core->node, &dmu_cores);
	return core;
}

static void dmu_core_drop_target(struct dmu_core *core)
{
	LIST_HEAD(failed);
	LIST_HEAD(backlog);

	mutex_lock(&dmu_cores_mu);
	if (--core->ntargets > 0) {
		mutex_unlock(&dmu_cores_mu);
		return;
	}
	spin_lock(&core->lock);
	core->dead = true;
	/* dm waits for in-flight bios before destroying a table; be safe anyway. */
	list_splice_init(&core->queue, &failed);
	list_splice_init(&core->backlog, &backlog);
	spin_unlock(&core->lock);
	misc_deregister(&core->misc);
	list_del(&core->node);
	mutex_unlock(&dmu_cores_mu);

	cancel_delayed_work_sync(&core->timeout_work);
	cancel_delayed_work_sync(&core->reap_work);
	wake_up_all(&core->rd_wq);
	dmu_fail_backlog(&backlog);
	dmu_fail_list(core, &failed);
	dmu_core_put(core);
}

static bool dmu_valid_name(const char *s)
{
	size_t n = strnlen(s, DM_NAME_LEN);

	if (n == 0 || n >= DM_NAME_LEN || !strcmp(s, ".") || !strcmp(s, ".."))
		return false;
	for (; *s; s++)
		if (*s == '/' || *s == '!' || *s <= ' ' || *s > '~')
			return false;
	return true;
}

static int dmu_ctr(struct dm_target *ti, unsigned int argc, char **argv)
{
	struct dmu_target *t;
	struct dmu_core *core;
	unsigned long long offset, length;
	char dummy;
	int err;

	if (argc != 3) {
		ti->error = "expected 3 arguments: <offset> <length> <misc_name>";
		return -EINVAL;
	}
	if (sscanf(argv[0], "%llu%c", &offset, &dummy) != 1) {
		ti->error = "invalid offset";
		return -EINVAL;
	}
	if (sscanf(argv[1], "%llu%c", &length, &dummy) != 1) {
		ti->error = "invalid length";
		return -EINVAL;
	}
	if (!dmu_valid_name(argv[2])) {
		ti->error = "invalid misc name";
		return -EINVAL;
	}
	t = kzalloc(sizeof(*t), GFP_KERNEL);
	if (!t) {
		ti->error = "out of memory";
		return -ENOMEM;
	}
	mutex_lock(&dmu_cores_mu);
	core = dmu_core_get_or_create(dm_table_get_md(ti->table), argv[2], &ti->error);
	mutex_unlock(&dmu_cores_mu);
	if (IS_ERR(core)) {
		err = PTR_ERR(core);
		kfree(t);
		return err;
	}
	t->core = core;
	t->offset = offset;
	t->length = length;

	ti->private = t;
	ti->per_io_data_size = sizeof(struct dmu_msg);
	ti->num_flush_bios = 1;
	ti->flush_supported = true;
	/* Whole 4 KiB blocks only (see dmu_io_hints): a multiple of 8 sectors. */
	err = dm_set_target_max_io_len(ti, max(8u, round_down(max_io_sectors, 8u)));
	if (err) {
		dmu_core_drop_target(core);
		kfree(t);
		ti->error = "cannot set max io len";
		return err;
	}
	return 0;
}

static void dmu_dtr(struct dm_target *ti)
{
	struct dmu_target *t = ti->private;

	dmu_core_drop_target(t->core);
	kfree(t);
}

static void dmu_status(struct dm_target *ti, status_type_t type,
		       unsigned int status_flags, char *result, unsigned int maxlen)
{
	struct dmu_target *t = ti->private;
	struct dmu_core *core = t->core;
	unsigned int sz = 0;
	unsigned int nch, outst;
	bool no_daemon;

	switch (type) {
	case STATUSTYPE_INFO:
		spin_lock(&core->lock);
		nch = core->nchannels;
		outst = core->outstanding;
		no_daemon = core->no_daemon;
		spin_unlock(&core->lock);
		/* <channels> <outstanding> <daemon: ok|lost> */
		DMEMIT("%u %u %s", nch, outst, no_daemon ? "lost" : "ok");
		break;
	case STATUSTYPE_TABLE:
		DMEMIT("%llu %llu %s", (unsigned long long)t->offset,
		       (unsigned long long)t->length, core->name);
		break;
	default:
		break;
	}
}

static void dmu_io_hints(struct dm_target *ti, struct queue_limits *limits)
{
	/* Daemons work in 4 KiB blocks; never hand them a partial block. */
	limits->logical_block_size = max_t(unsigned int, limits->logical_block_size, 4096);
	limits->physical_block_size = max_t(unsigned int, limits->physical_block_size, 4096);
	limits->io_min = max_t(unsigned int, limits->io_min, 4096);
}

static struct target_type dmu_target_type = {
	.name = "user",
	.version = { 1, 0, 0 },
	.module = THIS_MODULE,
	.ctr = dmu_ctr,
	.dtr = dmu_dtr,
	.map = dmu_map,
	.status = dmu_status,
	.io_hints = dmu_io_hints,
};

static int __init dmu_init(void)
{
	int err = dm_register_target(&dmu_target_type);

	if (err)
		DMERR("register failed %d", err);
	return err;
}

static void __exit dmu_exit(void)
{
	dm_unregister_target(&dmu_target_type);
}

module_init(dmu_init);
module_exit(dmu_exit);

MODULE_DESCRIPTION(DM_NAME " target forwarding I/O to a userspace daemon (vabc)");
MODULE_AUTHOR("vabc contributors");
MODULE_LICENSE("GPL");
MODULE_ALIAS("dm-user");
